"""Node health over HTTP: probe a health URL, wait until down or healthy, page the publisher.

"Down" and "healthy" are judged only by the node's health URL. HTTP is urllib's (no new
dependency); certificate checks stay on unless a caller passes ``insecure=True`` on purpose.
``NodeError`` is the error of every node operation (this module and ``node_identity``, ``nodes``).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from apim_upgrade.errors import ApimUpgradeError

NodeState = Literal["untouched", "stopping", "stopped", "starting", "healthy", "failed"]
PAGE_SIZE = 100  # publisher listing page; the product's default is 25
_DETAIL_CHARS = 200
_Probe = Literal["up", "answering", "down", "error"]


class NodeError(ApimUpgradeError):
    """A node did not stop, start or become healthy; says which node, what ran and what to do.

    ``statuses`` holds every node's state when a (rolling) restart stopped early.
    """

    def __init__(self, message: str, statuses: list[NodeStatus] | None = None) -> None:
        super().__init__(message)
        self.statuses = list(statuses or [])

    def __reduce__(self) -> tuple[type, tuple[str, list[NodeStatus]]]:
        # Prefect pickles task failures; keep the statuses across that trip.
        return (type(self), (str(self), self.statuses))


@dataclass
class NodeStatus:
    name: str
    group: str
    state: NodeState
    detail: str = ""


@dataclass(frozen=True)
class Answer:
    kind: _Probe  # up: 2xx; answering: another status; down: nothing listens; error: cannot tell
    detail: str
    body: Any = None  # the parsed JSON of a 2xx answer (None if it was not JSON)
    text: str = ""


def _opener(url: str, insecure: bool) -> urllib.request.OpenerDirector:
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        # urlopen would also read file:// and ftp:// URLs; a health URL is never one.
        raise NodeError(f"{url!r} is not an http(s) URL; fix health_url / the publisher URL in the plan")
    context = ssl.create_default_context()
    if insecure:
        # Only on an explicit request: nodes behind the product's self-signed certificate.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))


def probe(url: str, timeout: float, insecure: bool = False, token: str | None = None) -> Answer:
    opener = _opener(url, insecure)  # refuses anything but http(s) before a request exists
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with opener.open(request, timeout=timeout) as reply:
            status, text = reply.status, reply.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:  # a non-2xx answer: the server is there, not healthy
        try:
            text = exc.read().decode("utf-8", "replace") if exc.fp is not None else ""
        except (OSError, http.client.HTTPException):
            text = ""  # the status line is the answer; a body cut short adds nothing
        return Answer("answering", f"HTTP {exc.code} {summary(text)}".rstrip(), text=text)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLError):
            return Answer("error", f"TLS error: {reason}")
        if isinstance(reason, (ConnectionError, TimeoutError)):  # refused, reset, aborted, timed out
            return Answer("down", _error_text(reason))
        return Answer("error", _error_text(reason) if isinstance(reason, BaseException) else str(reason))
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        # Raised while reading: the server went away mid-answer (it is stopping).
        return Answer("down", _error_text(exc))
    try:
        body = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        body = None
    return Answer("up", f"HTTP {status} {summary(text)}".rstrip(), body, text)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def summary(text: str) -> str:
    """A short one-line form of a reply body for messages and status details."""
    try:
        text = json.dumps(json.loads(text), separators=(", ", ": "))
    except json.JSONDecodeError:
        text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


def http_check(url: str, timeout: float = 5.0, *, insecure: bool = False) -> tuple[bool, str]:
    """GET ``url``: (True, summary) on a 2xx answer, else (False, status and body or the error)."""
    answer = probe(url, timeout, insecure)
    return answer.kind == "up", answer.detail


def wait_until_down(url: str, timeout: float, interval: float = 1.0, *, insecure: bool = False) -> None:
    """Return once nothing answers at ``url`` (connection refused, reset or timed out).

    Any HTTP answer, even an error status or another version's, means a server is still
    there: "down" is never inferred from who answers (``identify`` says who that is).
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = probe(url, min(max(deadline - time.monotonic(), 0.5), 5.0), insecure)
        if answer.kind == "down":
            return
        if time.monotonic() + interval > deadline:
            raise NodeError(
                f"{url} still answers after {timeout:.0f} s (last answer: {answer.detail}); the node did not "
                "stop: check its stop command and logs, stop it by hand if need be, then rerun"
            )
        time.sleep(interval)


def wait_until_healthy(
    url: str,
    timeout: float,
    interval: float = 1.0,
    expect_version: str | None = None,
    *,
    insecure: bool = False,
    give_up: Callable[[], str | None] | None = None,
) -> dict[str, Any]:
    """The health answer's JSON once ``url`` answers 2xx (and reports ``expect_version``, if given).

    A node answering with another version is waited for too (an old control plane
    may still be going down); a non-JSON 2xx body comes back as ``{"body": text}``.
    ``give_up``, asked between probes, ends the wait at once with its reason (a fatal log line).
    """
    deadline = time.monotonic() + timeout
    while True:
        reason = give_up() if give_up is not None else None
        if reason is not None:
            raise NodeError(reason)
        answer = probe(url, min(max(deadline - time.monotonic(), 0.5), 5.0), insecure)
        problem = answer.detail
        if answer.kind == "up":
            body: dict[str, Any] = answer.body if isinstance(answer.body, dict) else {"body": answer.text[:500]}
            if expect_version is None or body.get("version") == expect_version:
                return body
            problem = f"answers version {body.get('version', '(none reported)')}, expected {expect_version}"
        if time.monotonic() + interval > deadline:
            advice = (
                "another version still serves this URL: make sure the old node is stopped and the URL is the new one's"
                if answer.kind == "up"
                else "check the node's logs (repository/logs/wso2carbon.log) and its start command"
            )
            raise NodeError(f"{url} not healthy within {timeout:.0f} s (last answer: {problem}); {advice}")
        time.sleep(interval)


def publisher_apis(
    url: str, timeout: float = 10.0, *, token: str | None = None, insecure: bool = False
) -> list[dict[str, Any]]:
    """Every API of a publisher listing (``.../api/am/publisher/v4/apis``), page by page.

    Pages with ``limit``/``offset`` while the answer carries ``pagination.total``;
    an answer without it is taken as the whole listing. ``token``: a bearer token
    (the product's publisher API needs one; the stand-in does not).
    """
    apis: list[dict[str, Any]] = []
    offset = 0
    while True:
        page_url = _with_query(url, limit=PAGE_SIZE, offset=offset)
        answer = probe(page_url, timeout, insecure, token)
        if answer.kind != "up":
            raise NodeError(
                f"publisher listing {page_url} failed: {answer.detail}; check that the control plane is up "
                "and the URL (and token) are right"
            )
        body = answer.body
        if not isinstance(body, dict) or not isinstance(body.get("list"), list):
            raise NodeError(
                f"publisher listing {page_url} answered {answer.detail}, not a listing "
                '({"count", "list": [...]}); point the URL at .../api/am/publisher/v4/apis'
            )
        page = [item for item in body["list"] if isinstance(item, dict)]
        apis.extend(page)
        pagination = body.get("pagination")
        if not isinstance(pagination, dict) or not isinstance(pagination.get("total"), int):
            return apis
        if pagination.get("offset", offset) != offset:
            # A server ignoring offset would hand out the first page forever.
            raise NodeError(f"publisher listing {page_url} ignored offset={offset}; cannot page through it")
        offset += len(page)
        if not page or offset >= pagination["total"]:
            return apis


def _with_query(url: str, **params: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in params]
    query += [(k, str(v)) for k, v in params.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))
