"""Tasks of the cutover phase: drift check, approval, control plane switch, gateways, rollback."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import ConfigDict, Field, model_validator

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.phases import CUTOVER
from apim_upgrade.plan import Plan, Strategy
from apim_upgrade.postgres import db
from apim_upgrade.postgres.catalog import Snapshot, take_snapshot
from apim_upgrade.proof.steps import audited_step
from apim_upgrade.wso2 import nodes
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


def decide_cutover(plan: Plan, drift: list[dict[str, object]]) -> CutoverDecision:
    """The human approval gate (runs in the flow: pausing is a flow-level act)."""
    section = plan.section("cutover")
    plan_text = _what_happens(plan, drift)
    create_markdown_artifact(key="cutover-plan", markdown=plan_text, description="What the cutover will do")
    with audited_step(plan, PHASE, "approval", {"unattended": section.unattended}) as rec:
        if section.unattended:
            decision = CutoverDecision(
                approve=True, decided_by="unattended (cutover.unattended = true)", reason="rehearsal"
            )
        else:
            get_run_logger().warning("cutover paused for approval: resume the flow run in the Prefect UI")
            decision = pause_flow_run(
                wait_for_input=CutoverDecision.with_initial_data(
                    description=plan_text, approve=False, decided_by="", reason=""
                ),
                timeout=section.approval_timeout_seconds,
            )
        rec.details.update(
            decision="approve" if decision.approve else "reject", by=decision.decided_by, reason=decision.reason
        )
        if not decision.approve:
            rec.outcome = "rejected"
    return decision


def _what_happens(plan: Plan, drift: list[dict[str, object]]) -> str:
    section = plan.section("cutover")
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
    return "\n".join(lines)


@retryable_task("stop_control_plane")
def stop_control_plane(plan: Plan, which: str, phase: str = PHASE) -> list[str]:
    """Stop every node of the 4.0.0 or 4.4.0 control plane and wait until each is really down."""
    section = plan.section("cutover")
    group = section.control_plane_400 if which == "400" else section.control_plane_440
    stopped = []
    for node in group:
        with audited_step(plan, phase, f"stop_control_plane_{which}", {"node": node.name}) as rec:
            nodes.stop_node(node, section.node_timeout_seconds)
            rec.details.update(node=node.name, health_url=node.health_url, state="stopped")
        stopped.append(node.name)
    return stopped


@retryable_task("start_control_plane")
def start_control_plane(plan: Plan, which: str, phase: str = PHASE) -> list[dict[str, Any]]:
    section = plan.section("cutover")
    group = section.control_plane_400 if which == "400" else section.control_plane_440
    health = []
    for node in group:
        with audited_step(plan, phase, f"start_control_plane_{which}", {"node": node.name}) as rec:
            running = nodes.already_healthy(node)
            if running is not None:  # started by an interrupted attempt: its log already said it was up
                rec.details.update(node=node.name, health=running, state="already running")
                health.append(running)
                continue
            offset = nodes.log_size(node.log_file) if node.log_file else 0
            answer = nodes.start_node(node, section.node_timeout_seconds, node.expect_version)
            rec.details.update(node=node.name, health=answer)
            if node.log_file is not None:  # healthy is not enough: the console must say it is up
                markers = nodes.watch_log(node.log_file, offset, nodes.SERVER_UP_MARKERS, section.node_timeout_seconds)
                rec.details["server_up"] = list(markers.values())
        health.append(answer)
    return health


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
            listed = {(str(a["name"]), str(a["version"])) for a in nodes.publisher_apis(node.publisher_url)}
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
    latest: dict[tuple[str, str], nodes.NodeStatus] = {}

    def on_status(status: nodes.NodeStatus) -> None:
        latest[(status.group, status.name)] = status
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
                }
                for g in section.gateway_groups
                for n in g.nodes
            ]
    return [{k: str(v) for k, v in row.items()} for row in rec.details["nodes"]]


@retryable_task("forget_cutover")
def forget_cutover(plan: Plan) -> None:
    """After a rollback the estate is back on 4.0.0: a later cutover must run again."""
    from apim_upgrade.postgres import history

    with audited_step(plan, "rollback", "forget_cutover"):
        history.forget(plan.server(), plan.databases.apim.target, PHASE, "done")
