"""Tasks of the window phase: forecast, open the window, fence the sources, wait for 4.0.0's sessions."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger

from apim_upgrade import window
from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.phases import WINDOW
from apim_upgrade.plan import Plan
from apim_upgrade.postgres import db, queries
from apim_upgrade.proof.steps import audited_step
from tasks.retry import retryable_task

PHASE = WINDOW.name


class SessionsRemain(ApimUpgradeError):
    """4.0.0's sessions did not leave the sources within the plan's bound."""


def _sources(plan: Plan) -> list[str]:
    return [p.source for p in plan.databases.roles().values()]


def measure_sources(plan: Plan) -> dict[str, int]:
    """pg_database_size of each source now (the forecast scales the rehearsal's phases by the growth)."""
    with db.session(plan.server(), plan.postgres.maintenance_db, read_only=True) as conn:
        return {s: int((db.fetch_one(conn, queries.DATABASE_SIZE, (s,)) or (0,))[0]) for s in _sources(plan)}


@retryable_task("forecast_window")
def forecast_window(plan: Plan) -> window.Forecast:
    """The expected window, from the latest successful rehearsal of this estate, scaled by source growth."""
    sizes = measure_sources(plan)
    with audited_step(plan, PHASE, "forecast_window", {"sizes": sizes}) as rec:
        forecast = window.forecast(plan, sizes)
        rec.details.update(
            rehearsal=forecast.rehearsal,
            growth=round(forecast.growth, 4),
            phases=forecast.phases,
            total_s=round(forecast.total_seconds, 2),
            source_bytes=sizes,
        )
    return forecast


@retryable_task("open_window")
def open_window(plan: Plan, approved_by: str) -> window.WindowState:
    """Record that the window is open: a rerun continues inside it, rollback closes it."""
    with audited_step(plan, PHASE, "open_window", {"approved_by": approved_by}) as rec:
        state = window.WindowState(approved_by=approved_by, opened_at=window.now_iso())
        state.save(plan)
        rec.details.update(marker=str(window.marker_path(plan)), rollback=window.rollback_hint(plan))
    return state


@retryable_task("mark_400_stopped")
def mark_400_stopped(plan: Plan, state: window.WindowState) -> window.WindowState:
    """When 4.0.0's control plane was down: the measured window starts here."""
    if state.stopped_400_at is None:
        state.stopped_400_at = window.now_iso()
        state.save(plan)
    with audited_step(plan, PHASE, "window_opened", {"stopped_400_at": state.stopped_400_at}) as rec:
        rec.details.update(stopped_400_at=state.stopped_400_at, approved_by=state.approved_by)
    return state


@retryable_task("fence_sources")
def fence_sources(plan: Plan) -> list[str]:
    """New sessions on the sources are read-only: a write during the window is refused, never left behind."""
    with audited_step(plan, PHASE, "fence_sources", {"sources": _sources(plan)}) as rec:
        with db.session(plan.server(), plan.postgres.maintenance_db, autocommit=True) as conn:
            for source in _sources(plan):
                db.execute(conn, queries.fence_database(source))
        rec.details["fenced"] = _sources(plan)
    return _sources(plan)


@retryable_task("lift_source_fence")
def lift_source_fence(plan: Plan, phase: str = "rollback") -> list[str]:
    """Rollback: the sources accept writes again (before 4.0.0 starts on them)."""
    with audited_step(plan, phase, "lift_source_fence", {"sources": _sources(plan)}) as rec:
        with db.session(plan.server(), plan.postgres.maintenance_db, autocommit=True) as conn:
            lifted = []
            for source in _sources(plan):
                if (db.fetch_one(conn, queries.SOURCE_FENCED, (source,)) or (False,))[0]:
                    db.execute(conn, queries.lift_database_fence(source))
                    lifted.append(source)
        rec.details["lifted"] = lifted
    return lifted


def _sessions(plan: Plan) -> list[dict[str, Any]]:
    with db.session(plan.server(), plan.postgres.maintenance_db, read_only=True) as conn:
        rows = db.fetch_all(conn, queries.OTHER_SESSIONS, (_sources(plan),))
    return [
        {"database": d, "pid": int(pid), "application": app, "address": addr, "user": user, "state": st}
        for d, pid, app, addr, user, st in rows
    ]


@retryable_task("wait_for_sessions")
def wait_for_sessions(plan: Plan) -> list[dict[str, Any]]:
    """Wait (bounded by cutover.session_wait_seconds) until no session remains on the sources.

    Stragglers are listed by application and client address; they are ended only when the
    plan's copy.terminate_connections says so, otherwise the run stops inside the window.
    """
    section = plan.section("cutover")
    terminate = plan.copy_options.terminate_connections
    deadline = time.monotonic() + section.session_wait_seconds
    with audited_step(
        plan, PHASE, "wait_for_sessions", {"bound_s": section.session_wait_seconds, "terminate": terminate}
    ) as rec:
        started = time.monotonic()
        remaining = _sessions(plan)
        while remaining and time.monotonic() < deadline:
            time.sleep(0.2)
            remaining = _sessions(plan)
        rec.details.update(waited_s=round(time.monotonic() - started, 2), stragglers=remaining)
        if remaining and terminate:
            with db.session(plan.server(), plan.postgres.maintenance_db, autocommit=True) as conn:
                for s in remaining:
                    db.fetch_all(conn, queries.TERMINATE_SESSION, (s["pid"],))
            rec.details["terminated"] = [s["pid"] for s in remaining]
            get_run_logger().warning("terminated %d straggling session(s) on the sources", len(remaining))
        elif remaining:
            listed = ", ".join(
                f"{s['application']} from {s['address']} on {s['database']} (pid {s['pid']})" for s in remaining
            )
            raise SessionsRemain(
                f"{len(remaining)} session(s) still on the sources {section.session_wait_seconds:g} s after 4.0.0 "
                f"stopped: {listed}; stop those clients (or set copy.terminate_connections = true) and rerun"
            )
    return remaining


@retryable_task("measure_window")
def measure_window(plan: Plan) -> float | None:
    """The window as it was: 4.0.0's control plane stopped -> 4.4.0 healthy (now), into the trail."""
    from datetime import datetime

    state = window.read_state(plan)
    if state is None or state.stopped_400_at is None:
        return None
    if state.closed_at is None:
        state.closed_at = window.now_iso()
        state.save(plan)
    seconds = (datetime.fromisoformat(state.closed_at) - datetime.fromisoformat(state.stopped_400_at)).total_seconds()
    with audited_step(plan, window.CUTOVER_PHASE, "window_measured", {"stopped_400_at": state.stopped_400_at}) as rec:
        rec.details.update(
            stopped_400_at=state.stopped_400_at, healthy_440_at=state.closed_at, window_s=round(seconds, 2)
        )
    get_run_logger().info("window: 4.0.0 stopped -> 4.4.0 healthy in %.1f s", seconds)
    return seconds
