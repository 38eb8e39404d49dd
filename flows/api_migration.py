"""Phase 5, api-migration: API-M data and registry from 4.0.0 to 4.2.0."""

from __future__ import annotations

from prefect import flow

from apim_upgrade.plan import load_plan
from tasks.gates import DATA_DOCS_HOOKS, validate_migration
from tasks.jvm import (
    check_phase_done,
    home_dbscripts,
    install_migration_kit,
    mark_phase_done,
    run_api_migration,
    snapshot_targets,
)

PHASE = "api-migration"


@flow(name=PHASE, on_completion=DATA_DOCS_HOOKS, on_failure=DATA_DOCS_HOOKS, on_crashed=DATA_DOCS_HOOKS)
def api_migration(plan_path: str) -> str:
    """api-manager.sh -Dmigrate -DmigrateFromVersion=4.0.0 -DmigratedVersion=4.2.0, gated."""
    plan = load_plan(plan_path)
    if check_phase_done(plan, PHASE):
        return "skipped (already done on this copy)"
    install_migration_kit(plan, PHASE, "api")
    before = snapshot_targets(plan, PHASE)
    run = run_api_migration(plan, PHASE)
    validate_migration(plan, PHASE, before, "api", str(home_dbscripts(plan)))
    mark_phase_done(plan, PHASE, run)
    return "migrated"
