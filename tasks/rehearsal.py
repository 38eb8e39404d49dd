"""Tasks that set up and tear down a rehearsal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from apim_upgrade.plan import Plan
from apim_upgrade.postgres import copies
from apim_upgrade.proof.steps import audited_step
from apim_upgrade.rehearsal import derive_rehearsal_plan
from apim_upgrade.wso2 import nodes
from tasks.retry import retryable_task


@retryable_task("prepare_rehearsal_plan")
def prepare_rehearsal_plan(plan: Plan, fresh: bool) -> str:
    path = derive_rehearsal_plan(plan)
    if fresh:
        from apim_upgrade.plan import load_plan

        drop_rehearsal_copies.fn(load_plan(path))
    return str(path)


@retryable_task("drop_rehearsal_copies")
def drop_rehearsal_copies(plan: Plan) -> str:
    """Drop the rehearsal's own copies (never a database this tool did not make for this plan)."""
    server, maint = plan.server(), plan.postgres.maintenance_db
    dropped = []
    with audited_step(plan, "rehearsal", "drop_rehearsal_copies") as rec:
        for pair in plan.databases.roles().values():
            state = copies.target_state(server, maint, plan, pair.source, pair.target, False)
            if state in (copies.CopyState.VERIFIED, copies.CopyState.INCOMPLETE):
                copies.drop_copy(server, maint, pair.target)
                dropped.append(pair.target)
        rec.details["dropped"] = dropped
    return "dropped " + (", ".join(dropped) or "nothing")


@retryable_task("stop_rehearsal_nodes")
def stop_rehearsal_nodes(plan: Plan) -> list[str]:
    """End of a rehearsal: its own 4.4.0 control plane and gateways stop before their copies are dropped.

    ``plan`` is the rehearsal plan, whose [cutover] nodes are the [cutover.rehearsal] ones
    (never production's: the plan refuses shared nodes). Nodes already down stop at once.
    """
    if plan.cutover is None:
        return []
    section = plan.cutover
    stopped = []
    for node in [*section.control_plane_440, *[n for g in section.gateway_groups for n in g.nodes]]:
        with audited_step(plan, "rehearsal", "stop_rehearsal_node", {"node": node.name}) as rec:
            nodes.stop_node(node, section.node_timeout_seconds)
            rec.details.update(node=node.name, health_url=node.health_url, state="stopped")
        stopped.append(node.name)
    return stopped


REHEARSAL_DEPLOYMENT = ("upgrade-apim", "rehearsal")


def pause_rehearsal_deployments(plan_path: Path) -> list[str]:
    """Pause every active schedule of the ``upgrade-apim/rehearsal`` deployments of this plan.

    A deployment is this plan's when its ``plan`` parameter names the same file. Returns one
    line per paused schedule (empty: no such deployment, or nothing active).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
    )

    flow_name, deployment_name = REHEARSAL_DEPLOYMENT
    paused: list[str] = []
    with get_client(sync_client=True) as client:
        deployments: Any = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
        )
        for deployment in deployments:
            named = (deployment.parameters or {}).get("plan")
            if not isinstance(named, str) or Path(named).expanduser().resolve() != plan_path.resolve():
                continue
            for schedule in deployment.schedules:
                if schedule.active:
                    client.update_deployment_schedule(deployment.id, schedule.id, active=False)
                    paused.append(f"{flow_name}/{deployment.name} ({deployment.id}) schedule {schedule.id}")
    return paused


@retryable_task("pause_rehearsal_schedules")
def pause_rehearsal_schedules(plan: Plan, phase: str = "cutover") -> list[str]:
    """After the cutover, the weekly rehearsal of this estate must not run again against it."""
    if plan.source_path is None:
        return []
    with audited_step(plan, phase, "pause_rehearsal_schedules", {"plan": str(plan.source_path)}) as rec:
        paused = pause_rehearsal_deployments(plan.source_path)
        rec.details.update(
            paused=paused or "none: no active upgrade-apim/rehearsal schedule of this plan on this Prefect API"
        )
    get_run_logger().info(
        "rehearsal schedules paused after the cutover: %s", "; ".join(paused) or "none (no rehearsal deployment)"
    )
    return paused
