"""The plan's node sections: how each control-plane and gateway node is started, stopped and checked.

Also the rule that keeps a rehearsal away from production: no rehearsal node may share a
health URL, a host:port or a command with a production node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    Field,
    model_validator,
)

from apim_upgrade.plan.sections import Section


class NodeCommands(Section):
    """One node and the commands that manage it (systemd, ssh, kubectl, ...: run as given)."""

    name: str = Field(min_length=1, description="Node name in logs, the audit trail and the approval form.")
    start: list[str] = Field(min_length=1, description="Argument list that starts the node.")
    stop: list[str] = Field(min_length=1, description="Argument list that stops the node.")
    health_url: str = Field(description="GET answers 2xx while the node is up.")
    publisher_url: str | None = Field(None, description="Publisher REST API listing (control plane only).")
    expect_version: str | None = Field(None, description="Product version its health endpoint must report.")
    log_file: Path | None = Field(
        None, description="Server log readable from here: watched for the server-up marker after a start."
    )
    carbon_home: str | None = Field(
        None,
        description="The node's home on its host; when set, the cutover checks that the server answering the "
        "health URL is this home (from the identity the health answer carries, or, for a node on this host, "
        "from the process behind the port / <carbon_home>/wso2carbon.pid).",
    )


class GatewayNode(NodeCommands):
    """A 4.4.0 gateway node; ``replaces``: the 4.0.0 gateway it takes over from (side by side)."""

    replaces: NodeCommands | None = Field(
        None,
        description="The 4.0.0 gateway this node replaces (same host and ports, another home): the cutover stops "
        "it before starting this node, rollback stops this node and starts it again. Without it the node is "
        "restarted in place and rollback leaves it as it is.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_plain_node(cls, data: Any) -> Any:
        # A plain NodeCommands is a gateway node that replaces nothing.
        if isinstance(data, NodeCommands) and not isinstance(data, GatewayNode):
            return data.model_dump()
        return data


class GatewayGroup(Section):
    """A gateway environment's nodes, restarted one at a time."""

    name: str = Field(min_length=1, description="Group name (the gateway environment).")
    nodes: list[GatewayNode] = Field(min_length=1, description="Its nodes, in restart order.")


class RehearsalNodes(Section):
    """Nodes a rehearsal may stop and start instead of the real ones (stand-ins, a staging estate).

    They must be other nodes than production's: no shared health URL, host:port or command.
    """

    control_plane_400: list[NodeCommands] = Field(min_length=1, description="Staging 4.0.0 control plane nodes.")
    control_plane_440: list[NodeCommands] = Field(
        min_length=1, description="The rehearsal's own 4.4.0 control plane nodes."
    )
    gateway_groups: list[GatewayGroup] = Field(default_factory=list, description="The rehearsal's gateway groups.")
    server_offset: int | None = Field(
        None,
        ge=0,
        description="[server] offset of the rehearsal's copy of the 4.4.0 home, when its nodes share a host "
        "with production's (so it never listens on production's ports).",
    )


class CutoverSection(Section):
    """The switch: stop 4.0.0's control plane, start 4.4.0's, restart every gateway."""

    rehearsal: RehearsalNodes | None = Field(
        None, description="Used instead of the nodes below in rehearsal mode; without it rehearsals skip cutover."
    )
    control_plane_400: list[NodeCommands] = Field(
        min_length=1, description="The 4.0.0 control plane nodes, stopped before 4.4.0 starts."
    )
    control_plane_440: list[NodeCommands] = Field(min_length=1, description="The 4.4.0 control plane nodes.")
    gateway_groups: list[GatewayGroup] = Field(
        default_factory=list, description="Gateway groups, restarted one node at a time after the control plane."
    )
    unattended: bool = Field(False, description="Approve automatically (rehearsals only).")
    accept_drift: bool = Field(False, description="Go on although the sources changed after they were copied.")
    approval_timeout_seconds: int = Field(
        3600, ge=10, description="How long the paused cutover waits for approve/reject before the run fails."
    )
    node_timeout_seconds: float = Field(600, gt=0, description="Per node: command plus health wait.")
    session_wait_seconds: float = Field(
        300,
        gt=0,
        description="Inside the window: how long to wait, after 4.0.0's control plane stopped, until none of its "
        "sessions remain on the sources (the stragglers are then listed; copy.terminate_connections ends them).",
    )


def labelled_nodes(nodes: CutoverSection | RehearsalNodes, prefix: str) -> list[tuple[str, NodeCommands]]:
    labelled = [(f"{prefix}.control_plane_400[{i}]", n) for i, n in enumerate(nodes.control_plane_400)]
    labelled += [(f"{prefix}.control_plane_440[{i}]", n) for i, n in enumerate(nodes.control_plane_440)]
    for g, group in enumerate(nodes.gateway_groups):
        for i, n in enumerate(group.nodes):
            labelled.append((f"{prefix}.gateway_groups[{g}].nodes[{i}]", n))
            if n.replaces is not None:
                labelled.append((f"{prefix}.gateway_groups[{g}].nodes[{i}].replaces", n.replaces))
    return labelled


def _what_makes_it(node: NodeCommands) -> dict[str, str]:
    """What makes a node this node: its URLs, the host:port they reach, its commands."""
    facts = {"health URL": node.health_url, "start command": " ".join(node.start), "stop command": " ".join(node.stop)}
    for label, url in (("health", node.health_url), ("publisher", node.publisher_url)):
        if url:
            parsed = urlsplit(url)
            if parsed.hostname:
                facts[f"{label} host:port"] = (
                    f"{parsed.hostname}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
                )
    return facts


def shared_nodes(production: list[tuple[str, NodeCommands]], rehearsal: list[tuple[str, NodeCommands]]) -> list[str]:
    clashes = []
    for r_label, r_node in rehearsal:
        r_facts = _what_makes_it(r_node)
        for p_label, p_node in production:
            p_facts = _what_makes_it(p_node)
            same = sorted(
                {
                    k.split(" ", 1)[1] if k.endswith("host:port") else k
                    for k, v in r_facts.items()
                    if v in p_facts.values()
                }
            )
            if same:
                clashes.append(f"{r_label} '{r_node.name}' shares its {', '.join(same)} with {p_label} '{p_node.name}'")
    return clashes
