"""Control-plane and gateway nodes: stop, start, checked acts, rolling restarts, log watch.

The tool never assumes how a node is managed: each node's start and stop are argument
lists from the plan (systemctl, ssh, kubectl, api-manager.sh ...) run through the one
process wrapper; "down" and "healthy" come from ``node_health``, and who answers a node's
URL from ``node_identity``: every act first checks that the server it would touch is the
plan's node.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from apim_upgrade.plan.nodes import GatewayGroup, GatewayNode, NodeCommands
from apim_upgrade.runtime import process
from apim_upgrade.wso2.node_health import (
    NodeError,
    NodeState,
    NodeStatus,
    summary,
    wait_until_down,
    wait_until_healthy,
)
from apim_upgrade.wso2.node_identity import NodeIdentity, already_healthy, identify, is_local, process_home, same_node

# Health polling of stop_node/start_node: a stand-in stops in a fraction of a second, a real
# node in tens of seconds; half a second costs neither much.
POLL_SECONDS = 0.5


def _no_status(status: NodeStatus) -> None:
    """Default ``on_status``: nobody listens."""


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
    elif found.pid and is_local(node.health_url) and process_home(found.pid) == found.carbon_home:
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
            report(status, "healthy", summary(json.dumps(health)) if health else "start command succeeded")
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
