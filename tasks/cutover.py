"""Tasks of the cutover phase: drift check, approval, control plane switch, gateways, rollback."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import ConfigDict, Field, model_validator

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.phases import CUTOVER
from apim_upgrade.plan import Plan
from apim_upgrade.plan.nodes import CutoverSection, NodeCommands
from apim_upgrade.plan.sections import Strategy
from apim_upgrade.postgres import db
from apim_upgrade.postgres.catalog import Snapshot, take_snapshot
from apim_upgrade.postgres.queries import DATABASE_INFO
from apim_upgrade.proof.steps import audited_step
from apim_upgrade.wso2 import node_health, node_identity, nodes
from tasks.gates import comparison_rows
from tasks.retry import retryable_task

PHASE = CUTOVER.name
AM_APIS = "SELECT api_name, api_version FROM am_api"


class SourceDrift(ApimUpgradeError):
    """Production changed after it was copied: those writes are not in the migrated copies."""

    exit_code = 10


class CutoverDecision(RunInput):
    """What the operator answers in the Prefect UI when the cutover pauses.

    An approval needs a name, a rejection a reason too. The rules are in the JSON schema, so
    the Prefect server refuses an incomplete answer at the form and the run stays paused.
    """

    # Model-level, so the rules survive with_initial_data (which rebuilds the fields without them).
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {"properties": {"decided_by": {"minLength": 1, "pattern": r"\S"}}},
                {
                    "if": {"properties": {"approve": {"const": False}}},
                    "then": {"properties": {"reason": {"minLength": 1, "pattern": r"\S"}}},
                },
            ]
        }
    )

    approve: bool = Field(description="Approve the cutover (untick to reject it).")
    decided_by: str = Field(min_length=1, pattern=r"\S", description="Who decides (name or e-mail).")
    reason: str = Field("", description="Why: required when rejecting.")

    @model_validator(mode="after")
    def _complete(self) -> CutoverDecision:
        if not self.approve and not self.reason.strip():
            raise ValueError("a rejection needs a reason")
        return self


@retryable_task("check_source_drift")
def check_source_drift(plan: Plan) -> list[dict[str, object]]:
    """Compare the sources now with the snapshot taken when they were copied."""
    section = plan.section("cutover")
    server = plan.server()
    changed: list[dict[str, object]] = []
    with audited_step(plan, PHASE, "check_source_drift", {"accept_drift": section.accept_drift}) as rec:
        for role, pair in plan.databases.roles().items():
            path = plan.work_dir / "snapshots" / f"{role}-source.json"
            if not path.exists():
                raise ApimUpgradeError(f"no snapshot of the {role} source at {path}; run prepare-databases first")
            then = Snapshot.load(path)
            now = take_snapshot(server, pair.source, pair.db_schema)  # read-only transaction
            changed += [dict(r, database=pair.source) for r in comparison_rows(then, now) if r["status"] != "ok"]
            if now.catalog_digest() != then.catalog_digest():
                changed.append({"database": pair.source, "table": "(schema)", "status": "catalogue changed"})
        rec.details.update(changed=[f"{r['database']}.{r['table']}" for r in changed])
        create_table_artifact(
            key="cutover-source-drift",
            table=changed or [{"table": "(no drift)"}],
            description="Source tables that changed since they were copied",
        )
        side_by_side = plan.strategy is Strategy.SIDE_BY_SIDE
        if changed and side_by_side and not section.accept_drift:
            raise SourceDrift(
                f"{len(changed)} source table(s) changed after the copy; with the side-by-side strategy those "
                "writes would be lost: "
                + ", ".join(f"{r['database']}.{r['table']}" for r in changed[:20])
                + ". Re-run the rehearsal from prepare-databases, or set cutover.accept_drift = true"
            )
    for row in changed:
        get_run_logger().warning("drift: %s.%s %s", row["database"], row["table"], row["status"])
    return changed


def _databases(plan: Plan, which: str) -> list[str]:
    """The databases the 4.0.0 (sources) or 4.4.0 (migrated copies) control plane must serve."""
    pairs = (plan.databases.apim, plan.databases.shared)
    return [p.source if which == "400" else p.target for p in pairs]


def _judge_nodes(plan: Plan) -> list[dict[str, Any]]:
    """Every node of the cutover as it really is now; ``ok`` False for a server that is not the plan's node.

    A URL answered by the plan's other control plane is fine (4.0.0 and 4.4.0 share host and
    ports: the cutover stops 4.0.0 first; a resumed one finds 4.4.0 already there); so is a
    gateway URL answered by the 4.0.0 gateway its 4.4.0 node replaces.
    """
    section = plan.section("cutover")
    judged: list[dict[str, Any]] = []
    groups = {"400": section.control_plane_400, "440": section.control_plane_440}
    for which, other in (("400", "440"), ("440", "400")):
        for node in groups[which]:
            found = node_identity.identify(node, databases=_databases(plan, which))
            owner = next((o for o in groups[other] if found.answering and node_identity.same_node(found, o)), None)
            if which == "400":
                ok = not found.answering or node_identity.same_node(found, node) or owner is not None
            else:  # "already running" only for the plan's 4.4.0 on the migrated copies
                ok = not found.answering or found.matches_plan or owner is not None
            line = found.line()
            if owner is not None and not found.matches_plan:
                line = f"{node.name}: its URL is served by {owner.name} ({found.server()})"
            judged.append({"role": f"control_plane_{which}", "ok": ok, **found.record(), "line": line})
    for group in section.gateway_groups:
        for gateway in group.nodes:
            found = node_identity.identify(gateway)
            old = gateway.replaces
            by_old = old is not None and found.answering and node_identity.same_node(found, old)
            ok = not found.answering or node_identity.same_node(found, gateway) or by_old
            line = (
                f"{gateway.name}: its URL is served by {old.name} ({found.server()})"
                if by_old and old
                else found.line()
            )
            judged.append({"role": f"gateway {group.name}", "ok": ok, **found.record(), "line": line})
    return judged


@retryable_task("check_nodes")
def check_nodes(plan: Plan, stage: str, phase: str = PHASE) -> list[dict[str, Any]]:
    """What really answers each node's URL (home, pid, databases): recorded, and refused if it is not the plan's.

    Runs before the approval and again right before the first stop, so a server of another
    home on a plan node's URL stops the cutover before anything is stopped.
    """
    with audited_step(plan, phase, "check_nodes", {"stage": stage}) as rec:
        judged = _judge_nodes(plan)
        rec.details["nodes"] = judged
        strays = [n for n in judged if not n["ok"]]
        if strays:
            raise node_health.NodeError(
                f"{stage}: {len(strays)} node URL(s) answered by a server that is not the plan's node; nothing "
                "was stopped. "
                + " | ".join(
                    f"{n['line']}. Stop it"
                    + (f" (`{n['carbon_home']}/bin/api-manager.sh stop`" if n["carbon_home"] else " (")
                    + (f" or `kill {n['pid']}`)" if n["pid"] else ")")
                    for n in strays
                )
                + ", or correct health_url / carbon_home in the plan, then rerun"
            )
    for node in judged:
        get_run_logger().info("%s: %s", stage, node["line"])
    return judged


def decide_cutover(
    plan: Plan,
    drift: list[dict[str, object]],
    states: list[dict[str, Any]] | None = None,
    forecast: list[str] | None = None,
    phase: str = PHASE,
) -> CutoverDecision:
    """The human approval gate (runs in the flow: pausing is a flow-level act).

    ``forecast``: the expected window (markdown lines); given, the plan shown is the window's:
    4.0.0 stops first and the copies and migrations run while it is down.
    """
    section = plan.section("cutover")
    plan_text = _what_happens(plan, drift, states or [], forecast)
    create_markdown_artifact(key="cutover-plan", markdown=plan_text, description="What the cutover will do")
    with audited_step(plan, phase, "approval", {"unattended": section.unattended}) as rec:
        if section.unattended:
            decision = CutoverDecision(
                approve=True, decided_by="unattended (cutover.unattended = true)", reason="rehearsal"
            )
        else:
            announce_pause()
            decision = pause_flow_run(
                # Initial data only for `approve`: with_initial_data redefines the fields it is given
                # without their constraints, and the server would then take an approval without a name.
                wait_for_input=CutoverDecision.with_initial_data(description=plan_text, approve=False),
                timeout=section.approval_timeout_seconds,
            )
        rec.details.update(
            decision="approve" if decision.approve else "reject", by=decision.decided_by, reason=decision.reason
        )
        if not decision.approve:
            rec.outcome = "rejected"
    return decision


def flow_run_ui_url(run_id: str) -> str:
    """The UI page of a flow run: PREFECT_UI_URL, else the API URL without its /api suffix."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    base = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/").removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{run_id}"


def announce_pause() -> str:
    """Name and link the paused cutover run, in its own log and its parent's (whose UI shows "Running").

    The parent run also gets a link artifact ``cutover-approval`` pointing at the paused run.
    """
    from uuid import UUID

    from prefect.artifacts import LinkArtifact
    from prefect.client.orchestration import get_client
    from prefect.logging.loggers import flow_run_logger
    from prefect.runtime import flow_run as this_run

    run_id, name = str(this_run.get_id()), this_run.get_name()
    url = flow_run_ui_url(run_id)
    line = f"cutover paused for approval in flow run '{name}' ({run_id}): approve or reject it at {url}"
    get_run_logger().warning(line)
    parent = this_run.get_parent_flow_run_id()
    if parent is not None:
        with get_client(sync_client=True) as client:
            parent_run = client.read_flow_run(UUID(parent))
        flow_run_logger(parent_run).warning(line)
        LinkArtifact(
            link=url,
            link_text=f"cutover waiting for approval: flow run {name}",
            key="cutover-approval",
            description=f"The paused cutover subflow run {name} ({run_id}): resume it with approve/reject.",
            flow_run_id=UUID(parent),
        ).create()
    return line


def _what_happens(
    plan: Plan, drift: list[dict[str, object]], states: list[dict[str, Any]], forecast: list[str] | None = None
) -> str:
    section = plan.section("cutover")
    if forecast is not None:
        return _window_plan(plan, states, forecast)
    lines = [
        f"## Cutover of `{plan.name}` ({plan.strategy.value})",
        "",
        f"1. stop the 4.0.0 control plane: {', '.join(n.name for n in section.control_plane_400)}",
        f"2. start 4.4.0 on `{plan.databases.apim.target}` / `{plan.databases.shared.target}`: "
        + ", ".join(n.name for n in section.control_plane_440),
        "3. check health and that the publisher lists every API of AM_API",
        "4. restart gateways one node at a time: "
        + "; ".join(f"{g.name} ({', '.join(n.name for n in g.nodes)})" for g in section.gateway_groups),
        "",
    ]
    lines.append(f"Source drift since the copy: {len(drift)} table(s)" if drift else "No source drift since the copy.")
    if states:
        lines += ["", "### The estate now (what answers each node's URL)", ""]
        lines += [f"- {state['line']}" for state in states]
    return "\n".join(lines)


def _window_plan(plan: Plan, states: list[dict[str, Any]], forecast: list[str]) -> str:
    from apim_upgrade.window import rollback_hint, window_phases

    section = plan.section("cutover")
    cp400 = ", ".join(n.name for n in section.control_plane_400)
    lines = [
        f"## Cutover of `{plan.name}` ({plan.strategy.value}) inside a window",
        "",
        "Done before this approval: inputs checked, the 4.2.0 home unpacked and checked, the 4.4.0 configuration "
        "rendered. On approval the window opens:",
        "",
        f"1. stop the 4.0.0 control plane ({cp400}); the gateways keep serving",
        f"2. fence `{plan.databases.apim.source}` / `{plan.databases.shared.source}` read-only (new writes are "
        f"refused) and wait up to {section.session_wait_seconds:g} s until 4.0.0's sessions left them",
        "3. then, on the frozen sources: " + " → ".join(window_phases()),
        f"4. start 4.4.0 on `{plan.databases.apim.target}` / `{plan.databases.shared.target}` "
        f"({', '.join(n.name for n in section.control_plane_440)}): the window closes when it is healthy",
        "5. conformance again after its first start; the publisher lists every API of AM_API",
        "6. restart gateways one node at a time: "
        + "; ".join(f"{g.name} ({', '.join(n.name for n in g.nodes)})" for g in section.gateway_groups),
        "",
        "### Expected window",
        "",
        *forecast,
        "",
        f"Any failure inside the window: {rollback_hint(plan)}.",
    ]
    if states:
        lines += ["", "### The estate now (what answers each node's URL)", ""]
        lines += [f"- {state['line']}" for state in states]
    return "\n".join(lines)


@retryable_task("stop_control_plane")
def stop_control_plane(plan: Plan, which: str, phase: str = PHASE) -> list[str]:
    """Stop every node of the 4.0.0 or 4.4.0 control plane, each only if it is what answers its URL.

    A node already down is reported "already down"; a URL answered by the other control
    plane's node (a resumed cutover) likewise; any other server stops it with nothing stopped.
    """
    section = plan.section("cutover")
    group = section.control_plane_400 if which == "400" else section.control_plane_440
    successors = section.control_plane_440 if which == "400" else section.control_plane_400
    outcomes = []
    for node in group:
        with audited_step(plan, phase, f"stop_control_plane_{which}", {"node": node.name}) as rec:
            state, found = nodes.stop_checked(node, section.node_timeout_seconds, successors=successors)
            rec.details.update(node=node.name, health_url=node.health_url, state=state, found=found.record())
        outcomes.append(f"{node.name}: {state}")
    return outcomes


@retryable_task("start_control_plane")
def start_control_plane(plan: Plan, which: str, phase: str = PHASE) -> list[dict[str, Any]]:
    """Start every node of a control plane; "already running" only from the plan's node on its databases."""
    section = plan.section("cutover")
    group = section.control_plane_400 if which == "400" else section.control_plane_440
    health = []
    for node in group:
        with audited_step(plan, phase, f"start_control_plane_{which}", {"node": node.name}) as rec:
            offset = nodes.log_size(node.log_file) if node.log_file else 0
            state, answer, found = nodes.start_checked(
                node, section.node_timeout_seconds, databases=_databases(plan, which)
            )
            rec.details.update(node=node.name, health=answer, state=state, found=found.record())
            if state == "started" and node.log_file is not None:  # healthy is not enough: the console must say so
                markers = nodes.watch_log(node.log_file, offset, nodes.SERVER_UP_MARKERS, section.node_timeout_seconds)
                rec.details["server_up"] = list(markers.values())
        health.append(answer)
    return health


@retryable_task("decide_rollback")
def decide_rollback(plan: Plan) -> str | None:
    """First step of a rollback, before any node: the line saying there is nothing to roll back, else None.

    Its record goes to the trail's file; the database copy gets it only if the target still exists.
    """
    from apim_upgrade.rehearsal import nothing_to_roll_back

    with audited_step(plan, "rollback", "decide_rollback") as rec:
        nothing = nothing_to_roll_back(plan)
        rec.details["decision"] = nothing or "roll back"
        if nothing is not None:
            rec.outcome = "skipped"
    return nothing


@retryable_task("stop_serving_440")
def stop_serving_440(plan: Plan) -> list[str]:
    """Rollback: stop whatever serves the 4.4.0 control plane's URLs, if this estate's runs started it.

    The plan's 4.4.0 node is stopped with its own stop command; a server of another home that
    this estate's runs made (a home the plan names, or one under its work directory, such as a
    rehearsal's copy of the 4.4.0 home) with that home's stop command; a server of any other
    home is never touched: NodeError naming it.
    """
    section = plan.section("cutover")
    outcomes = []
    for node in section.control_plane_440:
        with audited_step(plan, "rollback", "stop_control_plane_440", {"node": node.name}) as rec:
            found = node_identity.identify(node)
            rec.details.update(node=node.name, health_url=node.health_url, found=found.record())
            owner = next((o for o in section.control_plane_400 if node_identity.same_node(found, o)), None)
            if not found.answering:
                state = "already down"
            elif node_identity.same_node(found, node):
                nodes.stop_node(node, section.node_timeout_seconds)
                state = "stopped"
            elif owner is not None:
                state = f"already down (its URL answers '{owner.name}', the plan's 4.0.0 node)"
            elif (why := _estate_home(plan, found.carbon_home)) is not None:
                how = nodes.stop_other_home(node, found, section.node_timeout_seconds)
                state = f"stopped {found.server()}, {why}, with {how}"
            else:
                raise node_health.NodeError(
                    nodes.stray_message(node, found, "it is no home of this estate's runs, so rollback stopped nothing")
                )
            rec.details["state"] = state
        outcomes.append(f"{node.name}: {state}")
    return outcomes


def _estate_home(plan: Plan, home: str | None) -> str | None:
    """Why ``home`` belongs to this estate's runs (a home the plan names, or under its work directory), else None."""
    if not home:
        return None
    section = plan.section("cutover")
    named = [n.carbon_home for n in _all_nodes(section) if n.carbon_home]
    if plan.target_440 is not None:
        named += [str(plan.target_440.home), str(plan.target_440.old_home)]
    real = Path(os.path.realpath(home))
    if any(real == Path(os.path.realpath(other)) for other in named):
        return "a home the plan names"
    if real.is_relative_to(Path(os.path.realpath(plan.work_dir))):
        return f"a home under the estate's work directory {plan.work_dir}"
    return None


def _all_nodes(section: CutoverSection) -> list[NodeCommands]:
    found: list[NodeCommands] = []
    for holder in (section, section.rehearsal):
        if holder is None:
            continue
        found += [*holder.control_plane_400, *holder.control_plane_440]
        for group in holder.gateway_groups:
            found += [n for g in group.nodes for n in (g, g.replaces) if n is not None]
    return found


@retryable_task("check_publisher_apis")
def check_publisher_apis(plan: Plan) -> int:
    """Every API the migrated database holds is visible through the 4.4.0 publisher REST API."""
    section = plan.section("cutover")
    with db.session(plan.server(), plan.databases.apim.target, read_only=True) as conn:
        in_db = {(str(n), str(v)) for n, v in db.fetch_all(conn, AM_APIS)}
    with audited_step(plan, PHASE, "check_publisher_apis", {"apis_in_db": len(in_db)}) as rec:
        for node in section.control_plane_440:
            if node.publisher_url is None:
                continue
            listed = {(str(a["name"]), str(a["version"])) for a in node_health.publisher_apis(node.publisher_url)}
            missing, extra = sorted(in_db - listed), sorted(listed - in_db)
            rec.details.update(
                node=node.name, in_db=len(in_db), listed=len(listed), missing=missing[:50], extra=extra[:50]
            )
            if missing or extra:
                raise ApimUpgradeError(
                    f"{node.name}'s publisher lists {len(listed)} API(s), AM_API holds {len(in_db)}: missing "
                    f"{missing[:10]}, unexpected {extra[:10]}; check re-indexing ([indexing] re_indexing) and "
                    "the server log before sending traffic"
                )
    return len(in_db)


@retryable_task("restart_gateways")
def restart_gateways(plan: Plan) -> list[dict[str, str]]:
    """One node at a time, health-checked; stops at the first failure and says where each node is."""
    section = plan.section("cutover")
    latest: dict[tuple[str, str], node_health.NodeStatus] = {}
    out_since: dict[tuple[str, str], float] = {}  # when each node stopped serving
    out_for: dict[tuple[str, str], float] = {}  # how long it was out of service

    def on_status(status: node_health.NodeStatus) -> None:
        key = (status.group, status.name)
        latest[key] = status
        if status.state == "stopping":
            out_since[key] = time.monotonic()
        elif status.state == "healthy" and key in out_since:
            out_for[key] = round(time.monotonic() - out_since[key], 2)
        get_run_logger().info("gateway %s/%s: %s %s", status.group, status.name, status.state, status.detail)

    groups = [g.name for g in section.gateway_groups]
    with audited_step(plan, PHASE, "restart_gateways", {"groups": groups}) as rec:
        try:
            final = nodes.rolling_restart(section.gateway_groups, section.node_timeout_seconds, on_status=on_status)
            latest.update({(s.group, s.name): s for s in final})
        finally:
            # Every node of every group, in order, with the state it is really in now.
            rec.details["nodes"] = [
                {
                    "group": g.name,
                    "node": n.name,
                    "state": latest[(g.name, n.name)].state if (g.name, n.name) in latest else "untouched",
                    "detail": latest[(g.name, n.name)].detail if (g.name, n.name) in latest else "",
                    "out_of_service_s": out_for.get((g.name, n.name)),
                }
                for g in section.gateway_groups
                for n in g.nodes
            ]
    return [{k: str(v) for k, v in row.items()} for row in rec.details["nodes"]]  # out_of_service_s: seconds


@retryable_task("roll_back_gateways")
def roll_back_gateways(plan: Plan) -> list[str]:
    """One gateway at a time back to the 4.0.0 node it replaced; says where each one stays and why."""
    section = plan.section("cutover")

    def on_status(status: node_health.NodeStatus) -> None:
        get_run_logger().info("gateway %s/%s: %s %s", status.group, status.name, status.state, status.detail)

    with audited_step(
        plan, "rollback", "roll_back_gateways", {"groups": [g.name for g in section.gateway_groups]}
    ) as rec:
        try:
            final = nodes.roll_back_gateways(section.gateway_groups, section.node_timeout_seconds, on_status=on_status)
        except node_health.NodeError as exc:
            rec.details["nodes"] = [vars(s) for s in exc.statuses]
            raise
        rec.details["nodes"] = [vars(s) for s in final]
    return [f"{s.group}/{s.name}: {s.detail}" for s in final]


@retryable_task("forget_cutover")
def forget_cutover(plan: Plan) -> None:
    """After a rollback the estate is back on 4.0.0: a later cutover must run again."""
    from apim_upgrade.postgres import history

    target = plan.databases.apim.target
    with audited_step(plan, "rollback", "forget_cutover") as rec:
        with db.session(plan.server(), plan.postgres.maintenance_db, read_only=True) as conn:
            exists = db.fetch_one(conn, DATABASE_INFO, ([target],)) is not None
        if exists:
            history.forget(plan.server(), target, PHASE, "done")
        rec.details["forgotten_in"] = target if exists else f"nothing: {target} does not exist (no cutover recorded)"
