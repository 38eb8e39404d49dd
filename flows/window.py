"""Cutover only: the approval, then the window opens — 4.0.0 stops, the sources freeze, its sessions leave."""

from __future__ import annotations

from prefect import flow

from apim_upgrade import window as marker
from apim_upgrade.phases import WINDOW
from apim_upgrade.plan import load_plan
from tasks.cutover import check_nodes, decide_cutover, stop_control_plane
from tasks.window import fence_sources, forecast_window, mark_400_stopped, open_window, wait_for_sessions

PHASE = WINDOW.name


@flow(name=PHASE)
def window(plan_path: str) -> str:
    """Approval (with the forecast window), stop 4.0.0's control plane, fence the sources, wait for its sessions.

    A rerun inside an open window (the marker in the work directory) asks nothing again: it
    makes sure 4.0.0 is down, the sources fenced and its sessions gone, and goes on.
    """
    plan = load_plan(plan_path)
    state = marker.read_state(plan)
    if state is None:
        forecast = forecast_window(plan)
        states = check_nodes(plan, "before the approval", phase=PHASE)
        decision = decide_cutover(plan, [], states, forecast.markdown(), phase=PHASE)
        if not decision.approve:
            return f"rejected by {decision.decided_by}: {decision.reason or 'no reason given'}"
        check_nodes(plan, "before stopping 4.0.0", phase=PHASE)  # the estate may have changed while the approval waited
        state = open_window(plan, decision.decided_by)
    stop_control_plane(plan, "400", phase=PHASE)  # gateways keep serving
    state = mark_400_stopped(plan, state)
    fence_sources(plan)
    wait_for_sessions(plan)
    return f"open (approved by {state.approved_by}; 4.0.0 stopped at {state.stopped_400_at})"
