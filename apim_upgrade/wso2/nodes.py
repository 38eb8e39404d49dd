"""Control-plane and gateway nodes: stop, start, health checks, rolling restarts.

The tool never assumes how a node is managed: each node's start and stop are
argument lists from the plan (systemctl, ssh, kubectl, api-manager.sh ...) run
through the one process wrapper, and "down" / "healthy" are judged only by the
node's health URL. HTTP is urllib's (no new dependency); certificate checks stay
on unless a caller passes ``insecure=True`` on purpose.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.plan import GatewayGroup, NodeCommands
from apim_upgrade.runtime import process

NodeState = Literal["untouched", "stopping", "stopped", "starting", "healthy", "failed"]
PAGE_SIZE = 100  # publisher listing page; the product's default is 25
# Health polling of stop_node/start_node: a stand-in stops in a fraction of a second, a real
# node in tens of seconds; half a second costs neither much.
POLL_SECONDS = 0.5
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


def _no_status(status: NodeStatus) -> None:
    """Default ``on_status``: nobody listens."""


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class _Answer:
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


def _probe(url: str, timeout: float, insecure: bool = False, token: str | None = None) -> _Answer:
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
        return _Answer("answering", f"HTTP {exc.code} {_summary(text)}".rstrip(), text=text)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLError):
            return _Answer("error", f"TLS error: {reason}")
        if isinstance(reason, (ConnectionError, TimeoutError)):  # refused, reset, aborted, timed out
            return _Answer("down", _error_text(reason))
        return _Answer("error", _error_text(reason) if isinstance(reason, BaseException) else str(reason))
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        # Raised while reading: the server went away mid-answer (it is stopping).
        return _Answer("down", _error_text(exc))
    try:
        body = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        body = None
    return _Answer("up", f"HTTP {status} {_summary(text)}".rstrip(), body, text)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _summary(text: str) -> str:
    """A short one-line form of a reply body for messages and status details."""
    try:
        text = json.dumps(json.loads(text), separators=(", ", ": "))
    except json.JSONDecodeError:
        text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


def http_check(url: str, timeout: float = 5.0, *, insecure: bool = False) -> tuple[bool, str]:
    """GET ``url``: (True, summary) on a 2xx answer, else (False, status and body or the error)."""
    answer = _probe(url, timeout, insecure)
    return answer.kind == "up", answer.detail


def wait_until_down(
    url: str, timeout: float, interval: float = 1.0, *, insecure: bool = False, version: str | None = None
) -> None:
    """Return once nothing answers at ``url`` (connection refused, reset or timed out).

    Any HTTP answer, even an error status, means the server is still there, except that
    with ``version`` (the stopped node's) a healthy answer reporting another version means
    a successor took the URL over: this node is down (a resumed cutover, after 4.4.0
    started on the 4.0.0 control plane's host and ports).
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = _probe(url, min(max(deadline - time.monotonic(), 0.5), 5.0), insecure)
        if answer.kind == "down":
            return
        if version is not None and _other_version(answer, version):
            return
        if time.monotonic() + interval > deadline:
            raise NodeError(
                f"{url} still answers after {timeout:.0f} s (last answer: {answer.detail}); the node did not "
                "stop: check its stop command and logs, stop it by hand if need be, then rerun"
            )
        time.sleep(interval)


def _other_version(answer: _Answer, version: str) -> bool:
    reported = answer.body.get("version") if answer.kind == "up" and isinstance(answer.body, dict) else None
    return reported is not None and reported != version


def already_healthy(node: NodeCommands, *, insecure: bool = False) -> dict[str, Any] | None:
    """The node's health answer if it already answers healthy with its expected version, else None."""
    if not node.health_url:
        return None
    answer = _probe(node.health_url, 5.0, insecure)
    if answer.kind != "up" or not isinstance(answer.body, dict):
        return None
    if node.expect_version is not None and answer.body.get("version") != node.expect_version:
        return None
    return answer.body


def wait_until_healthy(
    url: str,
    timeout: float,
    interval: float = 1.0,
    expect_version: str | None = None,
    *,
    insecure: bool = False,
) -> dict[str, Any]:
    """The health answer's JSON once ``url`` answers 2xx (and reports ``expect_version``, if given).

    A node answering with another version is waited for too (an old control plane
    may still be going down); a non-JSON 2xx body comes back as ``{"body": text}``.
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = _probe(url, min(max(deadline - time.monotonic(), 0.5), 5.0), insecure)
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
        answer = _probe(page_url, timeout, insecure, token)
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


# --------------------------------------------------------------------------- one node


def stop_node(node: NodeCommands, timeout: float, *, insecure: bool = False) -> None:
    """Run the node's stop command, then wait until its health URL no longer answers.

    ``timeout`` covers both: commands like api-manager.sh stop return at once and
    the server goes down afterwards.
    """
    deadline = time.monotonic() + timeout
    _run_command(node, "stop", timeout)
    if node.health_url:
        try:
            wait_until_down(
                node.health_url, _remaining(deadline), POLL_SECONDS, insecure=insecure, version=node.expect_version
            )
        except NodeError as exc:
            raise NodeError(f"node '{node.name}' did not stop: {exc}") from None


def start_node(
    node: NodeCommands, timeout: float, expect_version: str | None = None, *, insecure: bool = False
) -> dict[str, Any]:
    """Run the node's start command, then wait until its health URL answers healthy.

    ``expect_version`` (default: the node's own ``expect_version``) must be the version
    the health answer reports. Returns the health answer (``{}`` for a node without a
    health URL: then only the command's exit code speaks for it).
    """
    deadline = time.monotonic() + timeout
    result = _run_command(node, "start", timeout)
    if not node.health_url:
        return {}
    version = expect_version if expect_version is not None else node.expect_version
    try:
        return wait_until_healthy(node.health_url, _remaining(deadline), POLL_SECONDS, version, insecure=insecure)
    except NodeError as exc:
        # What the start command said often explains it ("Process is already running").
        said = " | ".join(result.tail[-3:]) or "(nothing)"
        raise NodeError(f"node '{node.name}' did not become healthy: {exc} (start command output: {said})") from None


def _run_command(node: NodeCommands, which: Literal["start", "stop"], timeout: float) -> process.ProcessResult:
    argv = node.start if which == "start" else node.stop
    try:
        return process.run(argv, timeout=timeout)
    except process.ProcessFailed as exc:
        raise NodeError(
            f"node '{node.name}': {which} command `{' '.join(argv)}` failed: {exc}. Check the command in the "
            "plan and the node itself, then rerun"
        ) from None


def _remaining(deadline: float) -> float:
    # Whatever the command left over, still give the node a moment to answer.
    return max(deadline - time.monotonic(), 1.0)


# --------------------------------------------------------------------------- rolling restarts


def restart_group(
    group: GatewayGroup,
    timeout: float,
    on_status: Callable[[NodeStatus], None] = _no_status,
    *,
    insecure: bool = False,
) -> list[NodeStatus]:
    """Restart a group's nodes one at a time (stop, start, health check); stop at the first failure.

    The failed node ends ``failed`` with the reason, every later node ``untouched``
    (never stopped, so it keeps serving); NodeError lists every node's state.
    ``timeout`` applies to each stop and each start.
    """
    return _restart([group], timeout, on_status, insecure)


def rolling_restart(
    groups: list[GatewayGroup],
    timeout: float,
    on_status: Callable[[NodeStatus], None] = _no_status,
    *,
    insecure: bool = False,
) -> list[NodeStatus]:
    """restart_group over ``groups`` in order; the first failure anywhere leaves later groups untouched."""
    return _restart(groups, timeout, on_status, insecure)


def _restart(
    groups: list[GatewayGroup], timeout: float, on_status: Callable[[NodeStatus], None], insecure: bool
) -> list[NodeStatus]:
    plan = [(node, NodeStatus(node.name, group.name, "untouched")) for group in groups for node in group.nodes]
    statuses = [status for _, status in plan]

    def report(status: NodeStatus, state: NodeState, detail: str = "") -> None:
        status.state, status.detail = state, detail
        on_status(status)

    for node, status in plan:
        step = "stop"
        try:
            report(status, "stopping")
            stop_node(node, timeout, insecure=insecure)
            report(status, "stopped")
            step = "start"
            report(status, "starting")
            health = start_node(node, timeout, insecure=insecure)
            report(status, "healthy", _summary(json.dumps(health)) if health else "start command succeeded")
        except NodeError as exc:
            report(status, "failed", f"{step} failed: {exc}")
            raise NodeError(_restart_failure(status, statuses), statuses) from None
    return statuses


def _restart_failure(failed: NodeStatus, statuses: list[NodeStatus]) -> str:
    lines = [f"gateway restart stopped at node '{failed.name}' of group '{failed.group}':"]
    lines += [
        f"  - {s.group}/{s.name}: {s.state}" + (f" ({s.detail})" if s.state == "failed" else "") for s in statuses
    ]
    lines.append(
        f"  Nodes after '{failed.name}' were not touched and keep running as they were. Bring '{failed.name}' "
        "back (its logs, its start/stop commands in the plan), then rerun the restart."
    )
    return "\n".join(lines)


# The lines a control plane prints once it serves (shared/wso2/console-reference.md).
SERVER_UP_MARKERS = (
    r"WSO2 Carbon started in \d+ sec",
    r"API Publisher Default Context : \S+",
    r"API Developer Portal Default Context : \S+",
)


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def watch_log(path: Path, offset: int, patterns: tuple[str, ...], timeout: float) -> dict[str, str]:
    """Follow ``path`` from ``offset`` until every pattern has matched a line; the matching lines.

    Reads only what is new, line by line, keeping nothing but the matches (logs can be large).
    """
    compiled = {p: re.compile(p) for p in patterns}
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    position, partial = offset, ""
    while True:
        if path.exists():
            with open(path, encoding="utf-8", errors="replace") as fh:
                fh.seek(position)
                chunk = fh.read()
                position = fh.tell()
            lines = (partial + chunk).split("\n")
            partial = lines.pop()
            for line in lines:
                for pattern, regex in compiled.items():
                    if pattern not in found and regex.search(line):
                        found[pattern] = line.strip()
        if len(found) == len(compiled):
            return found
        if time.monotonic() > deadline:
            missing = [p for p in patterns if p not in found]
            raise NodeError(
                f"{path}: no line matching {', '.join(repr(m) for m in missing)} within {timeout:.0f} s of the "
                "start; read the server log before sending traffic"
            )
        time.sleep(POLL_SECONDS)
