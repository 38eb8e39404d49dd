"""The stand-in's HTTP endpoint: a health check and a read-only slice of the Publisher REST API.

Served on 127.0.0.1 at 9763 + ``[server] offset`` (the product's servlet HTTP
port) or at APIM_STANDIN_HTTP_PORT. ``GET /health`` answers 200
``{"status": "ok", "version": ...}`` (plus ``"profile"`` when started with
``-Dprofile=``) and the node's identity (``carbon_home``, ``pid``, and the
``databases`` it serves: ``apim_db`` / ``shared_db`` names from its deployment.toml,
null for H2), as a deployment's health/identity endpoint would, once the server
is up, and 503 with ``"status": "starting"`` / ``"stopping"`` before and during
shutdown, so a caller can tell which product version answers, from which home, and
whether it is ready. ``GET /api/am/publisher/v4/apis`` reads
AM_API live on every call, so a caller can compare what the server "sees" with
the database; a gateway-worker has no publisher and answers 404. A control plane also
takes the writes of a live estate (``POST`` DevPortal applications, keys, subscriptions
and ``/oauth2/token``: sandbox/distribution/devportal.py); a gateway-worker answers API
invocations (``GET /<context>/<version>/...`` with a bearer token). No authentication:
it never leaves the loopback interface.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.postgres import db
from sandbox.distribution import devportal
from sandbox.distribution.config import Datasource
from sandbox.distribution.registry import guard

SERVLET_HTTP_PORT = 9763
_APIS = """
SELECT api_name, api_version, api_provider, context, api_uuid FROM am_api
ORDER BY api_id LIMIT %s OFFSET %s
"""
_API_COUNT = "SELECT count(*) FROM am_api"
# The DevPortal REST API: v2 in 4.0.0, v3 since 4.1.0; the stand-in answers both on every version.
_DEVPORTAL = re.compile(r"^/api/am/devportal/v[23]/(?P<rest>.+?)/?$")
_KEYS = re.compile(r"^applications/(?P<app>[^/]+)/generate-keys$")
MAX_BODY = 64 * 1024


GATEWAY_PROFILE = "gateway-worker"


class ServerState:
    """What /health reports; the server flips it as it comes up and goes down."""

    def __init__(
        self,
        version: str,
        profile: str | None,
        *,
        carbon_home: str = "",
        pid: int = 0,
        databases: dict[str, str | None] | None = None,
    ) -> None:
        self.version, self.profile = version, profile
        self.status = "starting"  # starting -> ok -> stopping
        # Who answers: which home, which process, which databases (what the cutover checks).
        self.carbon_home, self.pid, self.databases = carbon_home, pid, dict(databases or {})


def start_http(port: int, state: ServerState, apim_db: Datasource) -> ThreadingHTTPServer:
    """Bind now (so a busy port fails the startup) and serve from a daemon thread."""

    class Handler(_Handler):
        pass

    Handler.state, Handler.apim_db = state, apim_db
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="standin-http", daemon=True
    ).start()
    return server


class _Handler(BaseHTTPRequestHandler):
    state = ServerState("", None)
    apim_db: Datasource | None = None
    server_version = "WSO2 Carbon Server"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            self._health()
        elif url.path.rstrip("/") == "/api/am/publisher/v4/apis" and self.state.profile != GATEWAY_PROFILE:
            self._apis(parse_qs(url.query))
        elif self.state.profile == GATEWAY_PROFILE and not url.path.startswith("/api/am/") and url.path.count("/") >= 2:
            # An API call (the stand-in gateway serves them on its one port); /api/am/... is the
            # control plane's REST APIs, which a gateway worker does not deploy: 404 below.
            self._invoke(url.path)
        else:
            self._reply(404, {"code": 404, "message": "Not Found", "description": f"No resource at {url.path}"})

    def _health(self) -> None:
        state = self.state
        body: dict[str, Any] = {"status": state.status, "version": state.version}
        if state.profile is not None:
            body["profile"] = state.profile
        body.update(carbon_home=state.carbon_home, pid=state.pid, databases=state.databases)
        self._reply(200 if state.status == "ok" else 503, body)

    def _apis(self, query: dict[str, list[str]]) -> None:
        source = self.apim_db
        if source is None or source.server is None or source.dbname is None:
            self._reply(503, {"code": 503, "message": "Service Unavailable", "description": "no API-M database"})
            return
        try:
            limit = int(query.get("limit", ["0"])[0]) or None
            offset = int(query.get("offset", ["0"])[0])
        except ValueError:
            limit = offset = -1
        if (limit is not None and limit < 0) or offset < 0:
            description = "limit/offset must be integers >= 0"
            self._reply(400, {"code": 400, "message": "Bad Request", "description": description})
            return
        try:
            with (
                guard(source, "listing APIs"),
                db.session(source.server, source.dbname, read_only=True) as conn,
            ):
                rows = db.fetch_all(conn, _APIS, (limit, offset))
                total = db.fetch_one(conn, _API_COUNT)
        except ApimUpgradeError as exc:
            self._reply(500, {"code": 500, "message": "Internal Server Error", "description": str(exc)})
            return
        apis = [{"id": i, "name": n, "version": v, "provider": p, "context": c} for n, v, p, c, i in rows]
        self._reply(
            200,
            {
                "count": len(apis),
                "list": apis,
                "pagination": {"offset": offset, "limit": limit, "total": int(total[0]) if total else 0},
            },
        )

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        source = self.apim_db
        if self.state.profile == GATEWAY_PROFILE or source is None:
            self._reply(404, {"code": 404, "message": "Not Found", "description": f"No resource at {url.path}"})
            return
        if self.state.status != "ok":
            self._reply(503, {"code": 503, "message": "Service Unavailable", "description": "server is not ready"})
            return
        try:
            self._reply(*self._write(url.path, source))
        except devportal.RestError as exc:
            self._reply(exc.status, exc.body)
        except ApimUpgradeError as exc:
            self._reply(500, {"code": 500, "message": "Internal Server Error", "description": str(exc)})

    def _write(self, path: str, source: Datasource) -> tuple[int, dict[str, Any]]:
        """The write endpoints; each commits before it answers."""
        user = (self._basic_auth() or ("admin", ""))[0]
        if path.rstrip("/") == "/oauth2/token":
            form = {k: v[-1] for k, v in parse_qs(self._body().decode("utf-8", "replace")).items()}
            client = self._basic_auth()
            return 200, devportal.issue_token(source, form, client)
        match = _DEVPORTAL.match(path)
        rest = match.group("rest") if match else ""
        if rest == "applications":
            return 201, devportal.create_application(source, user, self._json())
        if rest == "subscriptions":
            return 201, devportal.subscribe(source, user, self._json())
        keys = _KEYS.match(rest)
        if keys:
            return 200, devportal.generate_keys(source, user, unquote(keys.group("app")), self._json())
        raise devportal.RestError.rest(404, "Not Found", f"No resource at {path}")

    def _invoke(self, path: str) -> None:
        """A gateway worker serving an API call: a bearer token is required (not validated: stand-in)."""
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            description = (
                "Invalid Credentials. Make sure your API invocation call has a header: 'Authorization : Bearer ***'"
            )
            self._reply(401, {"code": "900902", "message": "Missing Credentials", "description": description})
            return
        if self.state.status != "ok":
            self._reply(503, {"code": 503, "message": "Service Unavailable", "description": "gateway is not ready"})
            return
        self._reply(200, {"gateway": self.state.carbon_home, "resource": path, "version": self.state.version})

    def _basic_auth(self) -> tuple[str, str] | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return None
        try:
            user, _, secret = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, secret

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            raise devportal.RestError.rest(400, "Bad Request", f"Content-Length must be 0 to {MAX_BODY} bytes")
        return self.rfile.read(length)

    def _json(self) -> dict[str, Any]:
        try:
            body = json.loads(self._body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise devportal.RestError.rest(400, "Bad Request", "The request body must be a JSON object")
        return body

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Access logs would interleave with the console; the product keeps them in a file too."""
