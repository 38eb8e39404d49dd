"""Control-plane and gateway nodes: stop, start, health checks, rolling restarts.

The tool never assumes how a node is managed: each node's start and stop are
argument lists from the plan (systemctl, ssh, kubectl, api-manager.sh ...) run
through the one process wrapper, and "down" / "healthy" are judged only by the
node's health URL. Which server answers that URL is ``identify``'s question: the
identity the health answer carries (home, pid, databases) or, for a node on this
host, the process behind the port; a healthy answer from another home is never
taken for the plan's node. HTTP is urllib's (no new dependency); certificate checks stay
on unless a caller passes ``insecure=True`` on purpose.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.plan import GatewayGroup, GatewayNode, NodeCommands
from apim_upgrade.runtime import process

NodeState = Literal["untouched", "stopping", "stopped", "starting", "healthy", "failed"]
IdentitySource = Literal["health answer", "process", "pid file", "none"]
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


def wait_until_down(url: str, timeout: float, interval: float = 1.0, *, insecure: bool = False) -> None:
    """Return once nothing answers at ``url`` (connection refused, reset or timed out).

    Any HTTP answer, even an error status or another version's, means a server is still
    there: "down" is never inferred from who answers (``identify`` says who that is).
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = _probe(url, min(max(deadline - time.monotonic(), 0.5), 5.0), insecure)
        if answer.kind == "down":
            return
        if time.monotonic() + interval > deadline:
            raise NodeError(
                f"{url} still answers after {timeout:.0f} s (last answer: {answer.detail}); the node did not "
                "stop: check its stop command and logs, stop it by hand if need be, then rerun"
            )
        time.sleep(interval)


def already_healthy(node: NodeCommands, *, insecure: bool = False) -> dict[str, Any] | None:
    """The node's health answer if it already answers healthy with its expected version, else None."""
    if not node.health_url:
        return None
    answer = _probe(node.health_url, 5.0, insecure)
    if answer.kind != "up" or not isinstance(answer.body, dict):
        return None
    if node.expect_version is not None and answer.body.get("version") != node.expect_version:
        return None
    home = answer.body.get("carbon_home")
    if node.carbon_home and isinstance(home, str) and not _same_path(home, node.carbon_home):
        return None  # healthy, but another home's server
    return answer.body


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


# --------------------------------------------------------------------------- identity

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class NodeIdentity:
    """What really answers a node's health URL, judged against the plan's node.

    ``matches_plan``: the answering server is the plan's node (its home, its version, and the
    databases the caller expects, as far as the answer tells); ``why`` says what was compared
    or what differs. Nothing answering is never a match (``answering`` is False).
    """

    node: str
    url: str
    answering: bool  # any HTTP answer (or one that cannot be read): a server holds the URL
    healthy: bool
    status: str  # the health answer's status ("ok", "starting", ...) or the probe's detail
    version: str | None = None
    profile: str | None = None
    carbon_home: str | None = None
    pid: int | None = None
    databases: dict[str, str | None] = field(default_factory=dict)
    identity_from: IdentitySource = "none"
    matches_plan: bool = False
    why: str = ""

    @property
    def stray(self) -> bool:
        """A server answers this node's URL and it is not the plan's node."""
        return self.answering and not self.matches_plan

    def server(self) -> str:
        """The answering server in a few words: '4.0.0 on wso2_am_db, wso2_shared_db (home /x, pid 12)'."""
        if not self.answering:
            return "nothing"
        text = self.version or "(version not reported)"
        if self.databases:
            text += " on " + ", ".join(str(name or "H2") for name in self.databases.values())
        where = [f"home {self.carbon_home}"] if self.carbon_home else []
        where += [f"pid {self.pid}"] if self.pid else []
        return text + (f" ({', '.join(where)})" if where else " (identity not reported)")

    def line(self) -> str:
        """One line for people: 'cp-400: running 4.0.0 on wso2_am_db (home ..., pid ...)', 'cp-440: down'."""
        if not self.answering:
            return f"{self.node}: down"
        state = "running" if self.healthy else f"answering ({self.status})"
        if self.matches_plan:
            return f"{self.node}: {state} {self.server()}"
        return f"{self.node}: its URL is answered by another server, {self.server()}: {self.why}"

    def record(self) -> dict[str, Any]:
        """The facts for the audit trail."""
        return {**asdict(self), "line": self.line()}


def identify(node: NodeCommands, *, databases: Sequence[str] | None = None, insecure: bool = False) -> NodeIdentity:
    """Which server answers ``node``'s health URL, and is it the plan's node?

    Identity comes from the health answer (``carbon_home``, ``pid``, ``databases``) when it
    carries one; else, for a node on this host with ``carbon_home`` set, from the process that
    listens on the URL's port (its CARBON_HOME from /proc), or failing that from
    ``<carbon_home>/wso2carbon.pid`` (a live process naming that home). ``databases``: the
    database names the node must serve (checked when the answer names its databases).
    """
    answer = _probe(node.health_url, 5.0, insecure)
    if answer.kind == "down":
        return NodeIdentity(node.name, node.health_url, False, False, answer.detail, why="nothing answers")
    body = answer.body if isinstance(answer.body, dict) else {}
    facts: dict[str, Any] = {
        "version": _text(body.get("version")),
        "profile": _text(body.get("profile")),
        "carbon_home": _text(body.get("carbon_home")),
        "pid": body.get("pid") if isinstance(body.get("pid"), int) else None,
        "databases": {str(k): _text(v) for k, v in body["databases"].items()}
        if isinstance(body.get("databases"), dict)
        else {},
        "identity_from": "health answer" if _text(body.get("carbon_home")) else "none",
    }
    if facts["identity_from"] == "none" and node.carbon_home and _is_local(node.health_url):
        facts.update(_local_identity(node.health_url, node.carbon_home))
    status = _text(body.get("status")) or answer.detail
    problems, checked = _differences(node, facts, databases)
    if answer.kind == "error":
        problems.insert(0, f"cannot tell what answers ({answer.detail})")
    why = "; ".join(problems) if problems else "same " + ", ".join(checked) if checked else "nothing to compare"
    return NodeIdentity(
        node.name, node.health_url, True, answer.kind == "up", status, **facts, matches_plan=not problems, why=why
    )


def same_node(identity: NodeIdentity, node: NodeCommands) -> bool:
    """Is the server behind ``identity`` the plan's ``node`` (same home, or same version if no home is known)?"""
    if not identity.answering:
        return False
    return not _differences(node, asdict(identity), None)[0]


def _differences(
    node: NodeCommands, facts: dict[str, Any], databases: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """(what differs from the plan's node, what was compared and agreed)."""
    problems: list[str] = []
    checked: list[str] = []
    if node.expect_version is not None:
        if facts["version"] != node.expect_version:
            reported = facts["version"] or "(none)"
            problems.append(f"it reports version {reported}, the plan expects {node.expect_version}")
        else:
            checked.append("version")
    if node.carbon_home and facts["carbon_home"]:
        if not _same_path(node.carbon_home, facts["carbon_home"]):
            problems.append(f"it runs from {facts['carbon_home']}, the plan's home is {node.carbon_home}")
        else:
            checked.append("home")
    elif node.carbon_home and facts["identity_from"] == "none" and _is_local(node.health_url):
        problems.append(f"no process of the plan's home {node.carbon_home} runs (wso2carbon.pid names none)")
    if databases is not None and facts["databases"]:
        served = [str(name) for name in facts["databases"].values()]
        if sorted(served) != sorted(databases):
            shown = ", ".join(str(name or "H2") for name in facts["databases"].values())
            problems.append(f"it serves {shown}, the plan expects {', '.join(databases)}")
        else:
            checked.append("databases")
    return problems, checked


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, int, float)) and str(value) else None


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOCAL_HOSTS


def _local_identity(url: str, carbon_home: str) -> dict[str, Any]:
    """Who answers ``url`` on this host: the listener of its port, else the plan home's pid file."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    pid = _listener_pid(port)
    if pid is not None:
        home = _process_home(pid)
        if home is not None:
            return {"carbon_home": home, "pid": pid, "identity_from": "process"}
    pid_file = Path(carbon_home) / "wso2carbon.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return {}
    home = _process_home(pid)
    if home is not None and _same_path(home, carbon_home):
        return {"carbon_home": home, "pid": pid, "identity_from": "pid file"}
    return {}


def _listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` here (None if /proc does not let us see it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == _TCP_LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue  # gone, or another user's
    return None


def _process_home(pid: int) -> str | None:
    """A live process's CARBON_HOME: its environment, else its command line (-Dcarbon.home=, --carbon-home)."""
    proc = Path(f"/proc/{pid}")
    try:
        args = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return None
    if not args:
        return None  # a zombie
    try:
        for item in (proc / "environ").read_bytes().split(b"\0"):
            if item.startswith(b"CARBON_HOME="):
                return item.split(b"=", 1)[1].decode(errors="replace")
    except OSError:
        pass  # another user's environment: the command line may still say it
    for i, arg in enumerate(args):
        if arg.startswith("-Dcarbon.home="):
            return arg.split("=", 1)[1]
        if arg == "--carbon-home" and i + 1 < len(args):
            return args[i + 1]
    return None


def stop_other_home(node: NodeCommands, found: NodeIdentity, timeout: float, *, insecure: bool = False) -> str:
    """Stop the server of another home that answers ``node``'s URL (one the caller has judged the estate's).

    Runs the node's stop command with its home replaced by that server's (the same way it
    would be stopped), else, for a process on this host, SIGTERM to its pid; then waits until
    the URL no longer answers. Returns how it was stopped.
    """
    if not found.carbon_home:
        raise NodeError(f"node '{node.name}': the server answering {node.health_url} reports no home; stop it by hand")
    deadline = time.monotonic() + timeout
    if node.carbon_home and any(node.carbon_home in arg for arg in node.stop):
        argv = [arg.replace(node.carbon_home, found.carbon_home) for arg in node.stop]
        how = f"`{' '.join(argv)}`"
        _run_command(node.model_copy(update={"stop": argv}), "stop", timeout)
    elif found.pid and _is_local(node.health_url) and _process_home(found.pid) == found.carbon_home:
        how = f"SIGTERM to pid {found.pid}"
        try:
            os.kill(found.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # gone meanwhile: the wait below agrees
    else:
        raise NodeError(f"node '{node.name}': cannot tell how to stop {found.server()}; stop it by hand, then rerun")
    try:
        wait_until_down(node.health_url, _remaining(deadline), POLL_SECONDS, insecure=insecure)
    except NodeError as exc:
        raise NodeError(f"{found.server()} did not stop after {how}: {exc}") from None
    return how


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
            wait_until_down(node.health_url, _remaining(deadline), POLL_SECONDS, insecure=insecure)
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
    follower = StartupFailureWatch(node.log_file) if node.log_file is not None else None
    result = _run_command(node, "start", timeout)
    if not node.health_url:
        return {}
    version = expect_version if expect_version is not None else node.expect_version
    give_up = (lambda: follower.failure(node.name)) if follower is not None else None
    try:
        return wait_until_healthy(
            node.health_url, _remaining(deadline), POLL_SECONDS, version, insecure=insecure, give_up=give_up
        )
    except NodeError as exc:
        if follower is not None and follower.found is not None:
            raise  # the log said why: that line is the message

        # What the start command said often explains it ("Process is already running").
        said = " | ".join(result.tail[-3:]) or "(nothing)"
        raise NodeError(f"node '{node.name}' did not become healthy: {exc} (start command output: {said})") from None


def stop_checked(
    node: NodeCommands,
    timeout: float,
    *,
    successors: Sequence[NodeCommands] = (),
    insecure: bool = False,
) -> tuple[str, NodeIdentity]:
    """Stop ``node`` only if the server answering its URL is that node; (what happened, who answered).

    Nothing answering: "already down" (no command runs). Answered by one of ``successors``
    (the plan's node that takes this URL over, e.g. 4.4.0 on 4.0.0's ports in a resumed
    cutover): "already down" too, saying which. Answered by any other server: NodeError
    naming it, and nothing is stopped.
    """
    found = identify(node, insecure=insecure)
    if not found.answering:
        return "already down", found
    if same_node(found, node):
        stop_node(node, timeout, insecure=insecure)
        return "stopped", found
    for other in successors:
        if same_node(found, other):
            return f"already down (its URL answers '{other.name}', the plan's successor)", found
    raise NodeError(stray_message(node, found, "nothing was stopped"))


def start_checked(
    node: NodeCommands,
    timeout: float,
    *,
    databases: Sequence[str] | None = None,
    insecure: bool = False,
) -> tuple[str, dict[str, Any], NodeIdentity]:
    """Start ``node`` unless it already runs: (state, health answer, who answered before the start).

    "already running" only when the healthy server at its URL is the plan's node (home,
    version, ``databases``); a server of another home, version or databases is never taken
    for it: NodeError naming that server, and nothing is started.
    """
    found = identify(node, databases=databases, insecure=insecure)
    if found.answering and not found.matches_plan:
        raise NodeError(stray_message(node, found, f"'{node.name}' was not started"))
    if found.healthy:
        health = already_healthy(node, insecure=insecure)
        if health is not None:
            return "already running", health, found
    return "started", start_node(node, timeout, node.expect_version, insecure=insecure), found


def stray_message(node: NodeCommands, found: NodeIdentity, consequence: str) -> str:
    """Why another server at a node's URL stops the cutover, and how to clear it."""
    how = []
    if found.carbon_home:
        how.append(f"`{found.carbon_home}/bin/api-manager.sh stop`")
    if found.pid:
        how.append(f"`kill {found.pid}`")
    stop_it = f"stop it ({' or '.join(how)})" if how else "stop it"
    return (
        f"node '{node.name}': {node.health_url} is answered by {found.server()}, which is not the plan's node "
        f"({found.why}); {consequence}. {stop_it}, or correct the node's health_url / carbon_home in the plan, "
        "then rerun"
    )


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
            report(status, "stopped", _stop_gateway(node, timeout, insecure))
            step = "start"
            report(status, "starting")
            health = start_node(node, timeout, insecure=insecure)
            report(status, "healthy", _summary(json.dumps(health)) if health else "start command succeeded")
        except NodeError as exc:
            report(status, "failed", f"{step} failed: {exc}")
            raise NodeError(_restart_failure(status, statuses, "restart"), statuses) from None
    return statuses


def _stop_gateway(node: GatewayNode, timeout: float, insecure: bool) -> str:
    """Stop the 4.0.0 gateway this node replaces (if any), then the node itself, each only if it is what answers."""
    said = []
    if node.replaces is not None:
        done, _ = stop_checked(node.replaces, timeout, successors=[node], insecure=insecure)
        said.append(f"'{node.replaces.name}' {done}")
    done, _ = stop_checked(
        node, timeout, successors=[node.replaces] if node.replaces is not None else [], insecure=insecure
    )
    said.append(f"'{node.name}' {done}")
    return "; ".join(said)


def roll_back_gateways(
    groups: list[GatewayGroup],
    timeout: float,
    on_status: Callable[[NodeStatus], None] = _no_status,
    *,
    insecure: bool = False,
) -> list[NodeStatus]:
    """One node at a time: stop the 4.4.0 gateway, start the 4.0.0 one it replaced; stop at the first failure.

    A node the plan gives no ``replaces`` was restarted in place by the cutover: it stays as
    it is (``untouched``, with what answers its URL now and why it stays).
    """
    plan = [(node, NodeStatus(node.name, group.name, "untouched")) for group in groups for node in group.nodes]
    statuses = [status for _, status in plan]

    def report(status: NodeStatus, state: NodeState, detail: str = "") -> None:
        status.state, status.detail = state, detail
        on_status(status)

    for node, status in plan:
        if node.replaces is None:
            found = identify(node, insecure=insecure)
            now = f"runs {found.server()}" if found.answering else "is down"
            report(status, "untouched", f"stays as it is ({now}): the plan names no 4.0.0 gateway it replaced")
            continue
        step = "stop"
        try:
            report(status, "stopping")
            done, _ = stop_checked(node, timeout, successors=[node.replaces], insecure=insecure)
            report(status, "stopped", f"'{node.name}' {done}")
            step = "start"
            report(status, "starting")
            state, _, _ = start_checked(node.replaces, timeout, insecure=insecure)
            version = node.replaces.expect_version or "its previous version"
            report(status, "healthy", f"back on {version}: '{node.replaces.name}' {state}")
        except NodeError as exc:
            report(status, "failed", f"{step} failed: {exc}")
            raise NodeError(_restart_failure(status, statuses, "rollback"), statuses) from None
    return statuses


def _restart_failure(failed: NodeStatus, statuses: list[NodeStatus], what: str) -> str:
    lines = [f"gateway {what} stopped at node '{failed.name}' of group '{failed.group}':"]
    lines += [
        f"  - {s.group}/{s.name}: {s.state}" + (f" ({s.detail})" if s.state == "failed" else "") for s in statuses
    ]
    lines.append(
        f"  Nodes after '{failed.name}' were not touched and keep running as they were. Bring '{failed.name}' "
        f"back (its logs, its start/stop commands in the plan), then rerun the {what}."
    )
    return "\n".join(lines)


# The lines a control plane prints once it serves (shared/wso2/console-reference.md).
SERVER_UP_MARKERS = (
    r"WSO2 Carbon started in \d+ sec",
    r"API Publisher Default Context : \S+",
    r"API Developer Portal Default Context : \S+",
)


# ERROR lines with which a WSO2 server refuses to start (its config parser, the Carbon server
# manager, the datasources): the start is reported failed at once, quoting the line.
STARTUP_FAILURE = re.compile(
    r"\bERROR\b.*(ConfigParser|CarbonServerManager|DataSourceRepository|Cannot start|"
    r"Error while (reading|parsing)|is not set)"
)


class StartupFailureWatch:
    """Follows a node's log from where it ended before the start; the first startup-failure ERROR line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.position = log_size(path)
        self.partial = ""
        self.found: str | None = None

    def failure(self, name: str) -> str | None:
        if self.found is None and self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                if fh.seek(0, 2) < self.position:  # rotated or rewritten: read it from the start
                    self.position = 0
                fh.seek(self.position)
                chunk = fh.read()
                self.position = fh.tell()
            lines = (self.partial + chunk).split("\n")
            self.partial = lines.pop()
            self.found = next((line.strip() for line in lines if STARTUP_FAILURE.search(line)), None)
        if self.found is None:
            return None
        return f"node '{name}' failed to start; its log {self.path} says: {self.found}"


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
