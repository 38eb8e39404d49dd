"""Which server really answers a node's health URL, judged against the plan's node.

The identity the health answer carries (home, pid, databases) or, for a node on this host,
the process behind the port (its CARBON_HOME from /proc) or the plan home's pid file; a
healthy answer from another home is never taken for the plan's node.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from apim_upgrade.plan.nodes import NodeCommands
from apim_upgrade.wso2.node_health import probe

IdentitySource = Literal["health answer", "process", "pid file", "none"]
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
    answer = probe(node.health_url, 5.0, insecure)
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
    if facts["identity_from"] == "none" and node.carbon_home and is_local(node.health_url):
        facts.update(_local_identity(node.health_url, node.carbon_home))
    status = _text(body.get("status")) or answer.detail
    problems, checked = _differences(node, facts, databases)
    if answer.kind == "error":
        problems.insert(0, f"cannot tell what answers ({answer.detail})")
    why = "; ".join(problems) if problems else "same " + ", ".join(checked) if checked else "nothing to compare"
    return NodeIdentity(
        node.name, node.health_url, True, answer.kind == "up", status, **facts, matches_plan=not problems, why=why
    )


def already_healthy(node: NodeCommands, *, insecure: bool = False) -> dict[str, Any] | None:
    """The node's health answer if it already answers healthy with its expected version, else None."""
    if not node.health_url:
        return None
    answer = probe(node.health_url, 5.0, insecure)
    if answer.kind != "up" or not isinstance(answer.body, dict):
        return None
    if node.expect_version is not None and answer.body.get("version") != node.expect_version:
        return None
    home = answer.body.get("carbon_home")
    if node.carbon_home and isinstance(home, str) and not _same_path(home, node.carbon_home):
        return None  # healthy, but another home's server
    return answer.body


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
    elif node.carbon_home and facts["identity_from"] == "none" and is_local(node.health_url):
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


def is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOCAL_HOSTS


def _local_identity(url: str, carbon_home: str) -> dict[str, Any]:
    """Who answers ``url`` on this host: the listener of its port, else the plan home's pid file."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    pid = _listener_pid(port)
    if pid is not None:
        home = process_home(pid)
        if home is not None:
            return {"carbon_home": home, "pid": pid, "identity_from": "process"}
    pid_file = Path(carbon_home) / "wso2carbon.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return {}
    home = process_home(pid)
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


def process_home(pid: int) -> str | None:
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
