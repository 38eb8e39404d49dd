"""Phase 3, identity-migration: the key manager (IS) migration on the copies."""

from __future__ import annotations

from prefect import flow

from apim_upgrade.phases import IDENTITY_MIGRATION
from flows.jvm_migration import run_gated_migration
from tasks.gates import DATA_DOCS_HOOKS
from tasks.jvm import run_identity_migration


@flow(
    name=IDENTITY_MIGRATION.name, on_completion=DATA_DOCS_HOOKS, on_failure=DATA_DOCS_HOOKS, on_crashed=DATA_DOCS_HOOKS
)
def identity_migration(plan_path: str) -> str:
    """api-manager.sh -Dmigrate -Dcomponent=identity, gated before and after."""
    return run_gated_migration(IDENTITY_MIGRATION, plan_path, "identity", run_identity_migration)
