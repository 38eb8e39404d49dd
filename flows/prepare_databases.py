"""Phase 1, prepare-databases: copy both production databases and gate the copies."""

from __future__ import annotations

from prefect import flow

from apim_upgrade.plan import load_plan
from tasks.databases import (
    check_copy_verified,
    check_preflight,
    copy_database,
    create_registry_indexes,
    snapshot_source,
)
from tasks.gates import validate_copy
from tasks.schema import check_conformance


@flow(name="prepare-databases", log_prints=True)
def prepare_databases(plan_path: str, terminate_connections: bool = False) -> dict[str, str]:
    """Snapshot each source, copy it with CREATE DATABASE ... TEMPLATE, gate the copy."""
    plan = load_plan(plan_path)
    terminate = terminate_connections or plan.copy_options.terminate_connections
    check_preflight(plan, terminate)
    if plan.schema_upgrade is not None and plan.schema_upgrade.source_dbscripts is not None:
        # Was the estate customised before we start? Differences are reported, not fatal.
        check_conformance(
            plan,
            plan.schema_upgrade.source_dbscripts,
            "source-400",
            databases="source",
            fail=False,
            phase="prepare-databases",
        )
    outcome: dict[str, str] = {}
    for role in plan.databases.roles():
        if check_copy_verified(plan, role):
            outcome[role] = "skipped (verified)"
            continue
        snapshot = snapshot_source(plan, role)
        copy_database(plan, role, terminate)
        if role == "shared":
            create_registry_indexes(plan)
        validate_copy(plan, role, snapshot)
        outcome[role] = "copied and verified"
    return outcome
