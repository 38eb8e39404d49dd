"""The shape shared by the two gated JVM migrations (identity, API): one sequence, two phases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apim_upgrade.phases import Phase
from apim_upgrade.plan import load_plan
from tasks.environment import check_copies_verified
from tasks.gates import validate_migration
from tasks.jvm import check_phase_done, home_dbscripts, install_migration_kit, mark_phase_done, snapshot_targets


def run_gated_migration(phase: Phase, plan_path: str, kit: str, run_client: Callable[..., Any]) -> str:
    """Kit in, counts before, the migration client, the gate against 4.2.0's DDL, completion recorded."""
    plan = load_plan(plan_path)
    check_copies_verified(plan)  # the 4.2.0 steps only ever run on verified copies
    if check_phase_done(plan, phase.name):
        return "skipped (already done on this copy)"
    install_migration_kit(plan, phase.name, kit)
    before = snapshot_targets(plan, phase.name)
    run = run_client(plan, phase.name)
    validate_migration(plan, phase.name, before, kit, str(home_dbscripts(plan)))
    mark_phase_done(plan, phase.name, run)
    return "migrated"
