"""Phase 9, cutover: stop 4.0.0's control plane, start 4.4.0's, restart every gateway — after approval."""

from __future__ import annotations

from prefect import flow

from apim_upgrade import window
from apim_upgrade.plan import load_plan
from apim_upgrade.rehearsal import is_rehearsal_plan
from tasks.cutover import (
    PHASE,
    check_nodes,
    check_publisher_apis,
    check_source_drift,
    decide_cutover,
    decide_rollback,
    forget_cutover,
    restart_gateways,
    roll_back_gateways,
    start_control_plane,
    stop_control_plane,
    stop_serving_440,
)
from tasks.jvm import check_phase_done, mark_phase_done
from tasks.rehearsal import pause_rehearsal_schedules
from tasks.schema import check_conformance, check_schema_upgraded
from tasks.window import lift_source_fence, measure_window


@flow(name=PHASE)
def cutover(plan_path: str) -> str:
    plan = load_plan(plan_path)
    if check_phase_done(plan, PHASE):
        return "skipped (already cut over)"
    drift = check_source_drift(plan)  # inside a window the sources are fenced: none expected
    opened = window.read_state(plan)
    if opened is not None:  # the window phase had the approval and stopped 4.0.0
        approved_by = opened.approved_by
    else:
        states = check_nodes(plan, "before the approval")
        decision = decide_cutover(plan, drift, states)
        if not decision.approve:
            return f"rejected by {decision.decided_by}: {decision.reason or 'no reason given'}"
        check_nodes(plan, "before stopping 4.0.0")  # the estate may have changed while the approval waited
        approved_by = decision.decided_by
    stop_control_plane(plan, "400")
    start_control_plane(plan, "440")
    if opened is not None:
        measure_window(plan)  # 4.0.0 stopped -> 4.4.0 healthy
    if plan.schema_upgrade is not None and check_schema_upgraded(plan):  # 4.4.0 applied the rest on its first start
        check_conformance(
            plan, plan.schema_upgrade.target_dbscripts, "440-after-start", phase=PHASE, stage="after-start"
        )
    apis = check_publisher_apis(plan)
    gateways = restart_gateways(plan)
    mark_phase_done(plan, PHASE, {"approved_by": approved_by, "apis": apis, "gateways": len(gateways)})
    paused = [] if is_rehearsal_plan(plan) else pause_rehearsal_schedules(plan)  # no rehearsal of a cut-over estate
    return f"cut over (approved by {approved_by}): {apis} APIs visible, {len(gateways)} gateway node(s) restarted" + (
        f"; {len(paused)} rehearsal schedule(s) paused" if paused else ""
    )


@flow(name="rollback")
def rollback(plan_path: str, confirmed: bool = False) -> str:
    """Side-by-side only: stop 4.4.0, start 4.0.0 again on the untouched sources, then each gateway's 4.0.0 node.

    ``confirmed``: the operator agreed to stop nodes (`apim-upgrade rollback` asks, or --yes).
    """
    from apim_upgrade.errors import ApimUpgradeError
    from apim_upgrade.estate_lock import estate_lock
    from apim_upgrade.plan.sections import Strategy

    plan = load_plan(plan_path)
    if plan.strategy is not Strategy.SIDE_BY_SIDE:
        raise ApimUpgradeError(
            "rollback needs the side-by-side strategy (4.0.0's databases untouched); "
            "with in-place, restore from your backups"
        )
    with estate_lock(plan, "rollback"):  # never while a run or another rollback works on the estate
        nothing = decide_rollback(plan)  # before any node is touched: is there anything to roll back?
        if nothing is not None:
            return nothing
        if not confirmed:
            raise ApimUpgradeError(ROLLBACK_NOT_CONFIRMED)
        stopped = stop_serving_440(plan)
        lifted = lift_source_fence(plan)  # the window froze the sources: 4.0.0 writes to them again
        start_control_plane(plan, "400", phase="rollback")
        gateways = roll_back_gateways(plan)
        forget_cutover(plan)
        window.forget(plan)
    lines = ["rolled back: 4.0.0 control plane running on the source databases", *(f"  {s}" for s in stopped)]
    lines += [f"  sources writable again: {', '.join(lifted)}"] if lifted else []
    lines += ["gateways:", *(f"  {g}" for g in gateways)] if gateways else ["gateways: none in the plan"]
    return "\n".join(lines)


ROLLBACK_NOT_CONFIRMED = (
    "rollback stops the 4.4.0 control plane and gateways: confirm it (`apim-upgrade rollback PLAN` asks on a "
    "terminal; pass --yes where there is none)"
)
