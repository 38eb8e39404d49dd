"""Traffic on the sandbox estate: a background client that keeps the control plane writing.

``apim-upgrade sandbox traffic start PLAN`` (or ``sandbox start PLAN --traffic``) starts
``python -m sandbox.traffic PLAN`` as a background process of its own (the project's process
wrapper, ``start_detached``); ``sandbox traffic stop`` and ``sandbox destroy`` stop it. While
it runs it calls the estate as its applications would, ``--rate`` times a second:

- ``POST /oauth2/token`` (client_credentials) on the control plane: a new access token row;
- ``GET /<context>/<version>/`` of an API through the next gateway, with the latest token;
- every ``--app-every`` rounds, a new application and a subscription of it to an API
  (DevPortal REST API), and once at the start its own application with keys.

Every call is a line of the ledger (``apim_upgrade/proof/ledger.py``, default
``<sandbox>/traffic.jsonl``, which the sandbox's plan names as ``[report] traffic_ledger``):
what was acknowledged and written (with the key that finds it in the database), what failed
and why. It calls the node addresses of the plan's ``[cutover]``: after a cutover the 4.4.0
control plane answers on the same address, as behind a real load balancer. SIGTERM ends it
after the call in flight.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import os
import random
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlencode, urlsplit

from psycopg import sql

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db
from apim_upgrade.postgres.address import PgServer
from apim_upgrade.proof import ledger
from apim_upgrade.runtime import process
from sandbox.errors import SandboxError
from sandbox.processes import processes_of

LEDGER_NAME = "traffic.jsonl"  # when the plan names none
PID_NAME = "traffic.pid"
LOG_NAME = "traffic.log"
DEFAULT_RATE = 4.0  # rounds per second: a token, an API call
DEFAULT_APP_EVERY = 10  # rounds between a new application + subscription
CALL_TIMEOUT = 10.0
STARTUP_SECONDS = 20.0  # until the started process runs as the generator
DEVPORTAL = "/api/am/devportal/v2"


@dataclass
class _Client:
    """What the generator knows: addresses, its OAuth client (kept in memory only), the APIs."""

    control_plane: str  # http://host:port
    publisher_url: str
    gateways: list[str]
    ledger_path: Path
    client: tuple[str, str] | None = None  # consumer key, secret: never written anywhere
    token: str | None = None  # never written anywhere
    apis: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 0
    stop: bool = False

    def call(
        self, call: str, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int | None, dict[str, Any] | None, ledger.LedgerEntry]:
        """One HTTP call, recorded: (status, JSON body, the entry). The caller adds what it wrote."""
        at, started = datetime.now(UTC), time.monotonic()
        status: int | None = None
        body: dict[str, Any] | None = None
        error: str | None = None
        method = "POST" if data else "GET"
        request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)  # noqa: S310 - http
        try:
            with urllib.request.urlopen(request, timeout=CALL_TIMEOUT) as reply:  # noqa: S310 - http on loopback
                status, raw = reply.status, reply.read()
            body = _json(raw)
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, _json(exc.read())
            error = f"HTTP {exc.code}: " + str(
                (answer or {}).get("description") or (answer or {}).get("error_description") or exc.reason
            )
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            error = f"no answer: {reason}"
        entry = ledger.LedgerEntry(
            at=at,
            seconds=round(time.monotonic() - started, 4),
            call=call,
            target=url.split("?", 1)[0],
            ok=status is not None and 200 <= status < 300,
            status=status,
            error=error,
        )
        return status, body, entry

    def record(self, entry: ledger.LedgerEntry, wrote: ledger.Written | None = None) -> None:
        if wrote is not None and entry.ok:
            entry = dataclasses.replace(entry, wrote=wrote)
        ledger.append(self.ledger_path, entry)

    # --- the calls ------------------------------------------------------------------

    def create_application(self, name: str) -> str | None:
        body = json.dumps({"name": name, "throttlingPolicy": "Unlimited", "description": "sandbox traffic"}).encode()
        url = f"{self.control_plane}{DEVPORTAL}/applications"
        _, answer, entry = self.call("application", url, data=body, headers={"Content-Type": "application/json"})
        app = str((answer or {}).get("applicationId") or "")
        self.record(entry, ledger.Written("apim", "am_application", {"uuid": app}) if app else None)
        return app or None

    def generate_keys(self, app: str) -> None:
        body = json.dumps({"keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"]}).encode()
        url = f"{self.control_plane}{DEVPORTAL}/applications/{app}/generate-keys"
        _, answer, entry = self.call("keys", url, data=body, headers={"Content-Type": "application/json"})
        key, secret = (answer or {}).get("consumerKey"), (answer or {}).get("consumerSecret")
        wrote = ledger.Written("apim", "idn_oauth_consumer_apps", {"consumer_key": str(key)}) if key else None
        self.record(entry, wrote)
        if key and secret:
            self.client = (str(key), str(secret))

    def subscribe(self, app: str) -> None:
        if not self.apis:
            return
        api = random.choice(self.apis)  # noqa: S311 - traffic, not a secret
        body = json.dumps({"applicationId": app, "apiId": api["id"], "throttlingPolicy": "Unlimited"}).encode()
        url = f"{self.control_plane}{DEVPORTAL}/subscriptions"
        _, answer, entry = self.call("subscription", url, data=body, headers={"Content-Type": "application/json"})
        sub = (answer or {}).get("subscriptionId")
        self.record(entry, ledger.Written("apim", "am_subscription", {"uuid": str(sub)}) if sub else None)

    def issue_token(self) -> None:
        assert self.client is not None
        basic = base64.b64encode(f"{self.client[0]}:{self.client[1]}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"}
        data = urlencode({"grant_type": "client_credentials"}).encode()
        _, answer, entry = self.call("token", f"{self.control_plane}/oauth2/token", data=data, headers=headers)
        token = (answer or {}).get("access_token")
        wrote = None
        if token:
            self.token = str(token)
            digest = hashlib.sha256(self.token.encode()).hexdigest()  # as the table stores it; never the token
            wrote = ledger.Written("apim", "idn_oauth2_access_token", {"access_token_hash": digest})
        self.record(entry, wrote)

    def invoke(self) -> None:
        if self.token is None or not self.apis or not self.gateways:
            return
        api = self.apis[self.rounds % len(self.apis)]
        gateway = self.gateways[self.rounds % len(self.gateways)]
        path = str(api["context"]).strip("/")  # 4.x contexts carry the version: /pizzashack/1.0.0
        path = path if path.endswith(str(api["version"])) else f"{path}/{api['version']}"
        url = f"{gateway}/{path}/"
        _, _, entry = self.call("invoke", url, headers={"Authorization": f"Bearer {self.token}"})
        self.record(entry)

    def load_apis(self) -> None:
        _, answer, entry = self.call("list-apis", self.publisher_url + "?limit=50")
        self.record(entry)
        self.apis = [a for a in (answer or {}).get("list", []) if a.get("id") and a.get("context")]

    def round(self, app_every: int) -> None:
        """One round: keys first if it has none; a token and an API call; now and then an application."""
        self.rounds += 1
        if not self.apis:
            self.load_apis()
        if self.client is None:
            app = self.create_application(f"traffic-{os.getpid()}-{self.rounds}")
            if app is not None:
                self.generate_keys(app)
            return
        self.issue_token()
        self.invoke()
        if self.rounds % app_every == 0:
            app = self.create_application(f"traffic-{os.getpid()}-{self.rounds}")
            if app is not None:
                self.subscribe(app)


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or b"null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def client_for(plan_path: Path, ledger_path: Path) -> _Client:
    """The generator's view of the estate: the plan's production addresses."""
    plan = load_plan(plan_path)
    if plan.cutover is None:
        raise SandboxError(f"{plan_path} has no [cutover] nodes: no control plane to send traffic to")
    cp = plan.cutover.control_plane_400[0]
    if cp.publisher_url is None:
        raise SandboxError(f"{plan_path}: cutover.control_plane_400[0] has no publisher_url to list APIs from")
    gateways = [_base(n.health_url) for g in plan.cutover.gateway_groups for n in g.nodes]
    return _Client(_base(cp.health_url), cp.publisher_url, gateways, ledger_path)


def run(plan_path: Path, ledger_path: Path, rate: float, app_every: int) -> int:
    """The generator's loop, until SIGTERM/SIGINT."""
    client = client_for(plan_path, ledger_path)

    def stop(signum: int, frame: FrameType | None) -> None:
        client.stop = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{datetime.now(UTC).isoformat()} traffic: {rate}/s to {client.control_plane}, ledger {ledger_path}")
    sys.stdout.flush()
    interval, next_round = 1.0 / rate, time.monotonic()
    while not client.stop:
        client.round(app_every)
        next_round = max(next_round + interval, time.monotonic())
        while not client.stop and (delay := next_round - time.monotonic()) > 0:
            time.sleep(min(0.05, delay))
    print(f"{datetime.now(UTC).isoformat()} traffic: stopped after {client.rounds} round(s)")
    return 0


def missing_writes(
    server: PgServer, databases: dict[str, str], entries: list[ledger.LedgerEntry]
) -> list[ledger.LedgerEntry]:
    """The acknowledged writes of ``entries`` not found in ``databases`` (the plan's role -> database name)."""
    missing = []
    sessions: dict[str, Any] = {}
    try:
        for entry in entries:
            if not entry.acknowledged_write or entry.wrote is None:
                continue
            wrote = entry.wrote
            if wrote.database not in sessions:
                sessions[wrote.database] = db.connect(server, databases[wrote.database], autocommit=True)
            where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in wrote.key)
            query = sql.SQL("SELECT 1 FROM {} WHERE {}").format(sql.Identifier(wrote.table), where)
            if db.fetch_one(sessions[wrote.database], query, tuple(wrote.key.values())) is None:
                missing.append(entry)
    finally:
        for conn in sessions.values():
            conn.close()
    return missing


# --- managing the background process --------------------------------------------------


def _pid_file(directory: Path) -> Path:
    return directory / PID_NAME


def running(directory: Path) -> int | None:
    """The pid of this sandbox's generator, if it runs (a stale pid file names no generator)."""
    path = _pid_file(directory)
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if pid in generator_processes(directory) else None


def generator_processes(directory: Path) -> list[int]:
    """Pids of traffic generators whose plan lies inside ``directory``."""
    return [pid for pid in processes_of("sandbox.traffic", "--plan", directory) if process.detached_running(pid)]


def start_traffic(
    plan_path: Path, *, rate: float = DEFAULT_RATE, app_every: int = DEFAULT_APP_EVERY, ledger_path: Path | None = None
) -> tuple[int, Path]:
    """Start the sandbox's generator in the background (once); its pid and ledger."""
    if not rate > 0:
        raise SandboxError(f"--rate must be above 0 (rounds per second), not {rate}")
    if app_every < 1:
        raise SandboxError(f"--app-every must be 1 or more, not {app_every}")
    plan_path = plan_path.resolve()
    directory = plan_path.parent
    if ledger_path is None:
        ledger_path = load_plan(plan_path).report.traffic_ledger or directory / LEDGER_NAME
    client_for(plan_path, ledger_path)  # a plan without nodes fails here, not in the background
    pid = running(directory)
    if pid is not None:
        return pid, ledger_path
    args: list[str | Path] = [sys.executable, "-m", "sandbox.traffic", "--plan", plan_path, "--ledger", ledger_path]
    args += ["--rate", str(rate), "--app-every", str(app_every)]
    pid = process.start_detached(args, log=directory / LOG_NAME, cwd=directory)
    _pid_file(directory).write_text(json.dumps({"pid": pid, "ledger": str(ledger_path), "rate": rate}))
    deadline = time.monotonic() + STARTUP_SECONDS
    while pid not in generator_processes(directory):  # until it runs as itself (exec done)
        if not process.detached_running(pid) or time.monotonic() > deadline:
            process.stop_detached(pid, grace=1)
            tail = (directory / LOG_NAME).read_text(errors="replace").strip().splitlines()[-3:]
            raise SandboxError(
                f"the traffic generator did not start: {' | '.join(tail) or '(no output)'}; see {directory / LOG_NAME}"
            )
        time.sleep(0.05)
    return pid, ledger_path


def stop_traffic(directory: Path) -> list[int]:
    """Stop every generator of this sandbox (SIGTERM: it ends after its call in flight); their pids."""
    pids = generator_processes(directory)
    for pid in pids:
        process.stop_detached(pid)
    _pid_file(directory).unlink(missing_ok=True)
    return pids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.traffic", description=__doc__)
    parser.add_argument("--plan", required=True, type=Path)
    parser.add_argument("--ledger", required=True, type=Path)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE)
    parser.add_argument("--app-every", type=int, default=DEFAULT_APP_EVERY)
    args = parser.parse_args(argv)
    return run(args.plan, args.ledger, args.rate, args.app_every)


if __name__ == "__main__":
    sys.exit(main())
