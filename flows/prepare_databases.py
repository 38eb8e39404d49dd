"""Phase 1, prepare-databases: copy both production databases and gate the copies."""

from __future__ import annotations

from prefect import flow

from apim_upgrade.phases import PREPARE_DATABASES
from apim_upgrade.plan import load_plan
from apim_upgrade.proof.gates import prewarm as prewarm_gates
from tasks.databases import (
    check_copy_verified,
    check_preflight,
    choose_copy_method,
    copy_database,
    copy_database_online,
    create_registry_indexes,
    snapshot_source,
)
from tasks.gates import DATA_DOCS_HOOKS, validate_copy
from tasks.schema import check_conformance


@flow(
    name=PREPARE_DATABASES.name,
    log_prints=True,
    on_completion=DATA_DOCS_HOOKS,
    on_failure=DATA_DOCS_HOOKS,
    on_crashed=DATA_DOCS_HOOKS,
)
def prepare_databases(plan_path: str, terminate_connections: bool = False) -> dict[str, str]:
    """Copy each source (CREATE DATABASE ... TEMPLATE, or online from one exported snapshot), gate the copy."""
    plan = load_plan(plan_path)
    terminate = terminate_connections or plan.copy_options.terminate_connections
    check_preflight(plan, terminate)
    verified = {role: check_copy_verified(plan, role) for role in plan.databases.roles()}
    source_ddl = plan.schema_upgrade.source_dbscripts if plan.schema_upgrade is not None else None
    if source_ddl is not None and not all(verified.values()):  # a resume past the copies reported it already
        # Was the estate customised before we start? Differences are reported, not fatal.
        check_conformance(
            plan,
            source_ddl,
            "source-400",
            databases="source",
            fail=False,
            phase=PREPARE_DATABASES.name,
        )
    outcome: dict[str, str] = {}
    for role in plan.databases.roles():
        if verified[role]:
            outcome[role] = "skipped (verified)"
            continue
        prewarm_gates()  # GX imports in the background while the server works
        choice = choose_copy_method(plan, role)
        if choice.method == "snapshot":  # a live source: counts from the snapshot the copy was read in
            snapshot = copy_database_online(plan, role, choice)
        else:
            snapshot = snapshot_source(plan, role)
            copy_database(plan, role, terminate, choice)
        if role == "shared":
            create_registry_indexes(plan)
        validate_copy(plan, role, snapshot)
        outcome[role] = "copied and verified"
    return outcome
