"""Phase 3, identity-migration: the key manager (IS) migration on the copies."""

from __future__ import annotations

from prefect import flow

from apim_upgrade.plan import load_plan
from tasks.gates import DATA_DOCS_HOOKS, validate_migration
from tasks.jvm import (
    check_phase_done,
    home_dbscripts,
    install_migration_kit,
    mark_phase_done,
    run_identity_migration,
    snapshot_targets,
)

PHASE = "identity-migration"


@flow(name=PHASE, on_completion=DATA_DOCS_HOOKS, on_failure=DATA_DOCS_HOOKS, on_crashed=DATA_DOCS_HOOKS)
def identity_migration(plan_path: str) -> str:
    """api-manager.sh -Dmigrate -Dcomponent=identity, gated before and after."""
    plan = load_plan(plan_path)
    if check_phase_done(plan, PHASE):
        return "skipped (already done on this copy)"
    install_migration_kit(plan, PHASE, "identity")
    before = snapshot_targets(plan, PHASE)
    run = run_identity_migration(plan, PHASE)
    validate_migration(plan, PHASE, before, "identity", str(home_dbscripts(plan)))
    mark_phase_done(plan, PHASE, run)
    return "migrated"
