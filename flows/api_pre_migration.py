"""Phase 4, api-pre-migration: find the APIs whose definitions would break."""

from __future__ import annotations

from prefect import flow

from apim_upgrade.phases import API_PRE_MIGRATION
from apim_upgrade.plan import load_plan
from tasks.environment import check_copies_verified
from tasks.gates import DATA_DOCS_HOOKS, validate_unchanged
from tasks.jvm import (
    check_phase_done,
    install_migration_kit,
    mark_phase_done,
    report_findings,
    run_pre_migration_validation,
    snapshot_targets,
)

PHASE = API_PRE_MIGRATION.name


@flow(name=PHASE, on_completion=DATA_DOCS_HOOKS, on_failure=DATA_DOCS_HOOKS, on_crashed=DATA_DOCS_HOOKS)
def api_pre_migration(plan_path: str) -> str:
    """api-manager.sh ... -DrunPreMigration; stops the upgrade while an unaccepted API is broken."""
    plan = load_plan(plan_path)
    check_copies_verified(plan)  # the 4.2.0 steps only ever run on verified copies
    if check_phase_done(plan, PHASE):
        return "skipped (already done on this copy)"
    install_migration_kit(plan, PHASE, "api")
    before = snapshot_targets(plan, PHASE)
    findings = run_pre_migration_validation(plan, PHASE)
    validate_unchanged(plan, PHASE, before)
    report_findings(plan, PHASE, findings)
    mark_phase_done(plan, PHASE, {"findings": len(findings)})
    return f"{len(findings)} finding(s), none blocking"
