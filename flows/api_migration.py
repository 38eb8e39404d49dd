"""Phase 5, api-migration: API-M data and registry from 4.0.0 to 4.2.0."""

from __future__ import annotations

from prefect import flow

from apim_upgrade.phases import API_MIGRATION
from flows.jvm_migration import run_gated_migration
from tasks.gates import DATA_DOCS_HOOKS
from tasks.jvm import run_api_migration


@flow(name=API_MIGRATION.name, on_completion=DATA_DOCS_HOOKS, on_failure=DATA_DOCS_HOOKS, on_crashed=DATA_DOCS_HOOKS)
def api_migration(plan_path: str) -> str:
    """api-manager.sh -Dmigrate -DmigrateFromVersion=4.0.0 -DmigratedVersion=4.2.0, gated."""
    return run_gated_migration(API_MIGRATION, plan_path, "api", run_api_migration)
