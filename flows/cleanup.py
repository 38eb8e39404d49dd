"""Phase 6, cleanup: the 4.2.0 migration environment is discarded (or archived)."""

from __future__ import annotations

from prefect import flow

from apim_upgrade.phases import CLEANUP
from apim_upgrade.plan import load_plan
from tasks.jvm import check_phase_done, discard_migration_home, mark_phase_done

PHASE = CLEANUP.name


@flow(name=PHASE)
def cleanup(plan_path: str) -> str:
    plan = load_plan(plan_path)
    if check_phase_done(plan, PHASE):
        return "skipped (already done on this copy)"
    removed = discard_migration_home(plan, PHASE)
    mark_phase_done(plan, PHASE, {"removed": removed})
    return f"removed {removed}"
