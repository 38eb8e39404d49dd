"""Tasks of the prepare-databases phase: small, retryable, idempotent."""

from __future__ import annotations

from prefect import get_run_logger

from apim_upgrade import preflight
from apim_upgrade.errors import DatabaseError, PreflightError
from apim_upgrade.phases import PREPARE_DATABASES
from apim_upgrade.plan import Plan
from apim_upgrade.postgres import copies
from apim_upgrade.postgres.catalog import Snapshot, take_snapshot
from apim_upgrade.proof.audit import pending_copies
from apim_upgrade.proof.steps import audited_step
from tasks.retry import retryable_task

PHASE = PREPARE_DATABASES.name


@retryable_task("check_preflight")
def check_preflight(plan: Plan, terminate_connections: bool) -> None:
    logger = get_run_logger()
    with audited_step(plan, PHASE, "preflight", {"terminate": terminate_connections}) as rec:
        report = preflight.run_preflight(plan, terminate_connections=terminate_connections)
        rec.details["findings"] = [f.line() for f in report.findings]
        for finding in report.findings:
            (logger.error if finding.severity == "error" else logger.info)(finding.line())
        if not report.ok:
            raise PreflightError([f"{f.check}: {f.message}" for f in report.errors])


@retryable_task("check_copy_verified")
def check_copy_verified(plan: Plan, role: str) -> bool:
    """True when this target is a verified copy already (a rerun skips it)."""
    pair = plan.databases.roles()[role]
    state = copies.target_state(
        plan.server(),
        plan.postgres.maintenance_db,
        plan,
        pair.source,
        pair.target,
        pair.target in pending_copies(plan.audit_path),
    )
    if state is copies.CopyState.VERIFIED:
        with audited_step(plan, PHASE, "copy_database", {"role": role}) as rec:
            rec.outcome = "skipped"
            rec.details.update(role=role, target=pair.target, reason="already copied and verified")
        get_run_logger().info("%s copy '%s' is already verified: skipping", role, pair.target)
        return True
    return False


@retryable_task("snapshot_source")
def snapshot_source(plan: Plan, role: str) -> Snapshot:
    """Exact row counts and catalogue of the source, in one consistent snapshot."""
    pair = plan.databases.roles()[role]
    with audited_step(plan, PHASE, "snapshot_source", {"role": role, "source": pair.source}) as rec:
        snap = take_snapshot(plan.server(), pair.source, pair.db_schema)
        path = snap.save(plan.work_dir / "snapshots" / f"{role}-source.json")
        rec.details.update(
            role=role,
            source=pair.source,
            tables=len(snap.row_counts),
            total_rows=snap.total_rows,
            digest=snap.digest(),
            catalog_digest=snap.catalog_digest(),
            file=str(path),
        )
    get_run_logger().info(
        "snapshot of %s '%s': %d tables, %d rows", role, pair.source, len(snap.row_counts), snap.total_rows
    )
    return snap


@retryable_task("copy_database")
def copy_database(plan: Plan, role: str, terminate_connections: bool) -> str:
    """CREATE DATABASE target WITH TEMPLATE source OWNER owner (rebuilds a half-made copy)."""
    logger = get_run_logger()
    pair = plan.databases.roles()[role]
    server, maint = plan.server(), plan.postgres.maintenance_db
    state = copies.target_state(
        server, maint, plan, pair.source, pair.target, pair.target in pending_copies(plan.audit_path)
    )
    if state is copies.CopyState.FOREIGN:
        raise DatabaseError(
            f"database '{pair.target}' exists and was not made by apim-upgrade for plan "
            f"'{plan.name}'; drop it yourself or choose another databases.{role}.target"
        )
    intent = {"role": role, "source": pair.source, "target": pair.target}
    with audited_step(plan, PHASE, "copy_database", intent, intent=intent) as rec:
        if state is copies.CopyState.INCOMPLETE:
            logger.warning("'%s' is an unfinished copy from an earlier run: rebuilding it", pair.target)
            copies.drop_copy(server, maint, pair.target)
            rec.details["rebuilt"] = True
        if terminate_connections:
            killed = copies.terminate_sessions(server, maint, pair.source)
            rec.details["terminated_sessions"] = killed
            if killed:
                logger.warning("terminated %d session(s) on '%s'", len(killed), pair.source)
        strategy = None if plan.copy_options.strategy == "default" else plan.copy_options.strategy
        statement = copies.create_copy(
            server,
            maint,
            source=pair.source,
            target=pair.target,
            owner=pair.owner,
            strategy=strategy,
            copying_marker=copies.marker(plan, pair.source, "copying"),
        )
        rec.details["statement"] = statement
    logger.info("copied %s: %s", role, statement)
    return statement


@retryable_task("create_registry_indexes")
def create_registry_indexes(plan: Plan) -> list[str]:
    pair = plan.databases.shared
    with audited_step(plan, PHASE, "create_registry_indexes", {"target": pair.target}) as rec:
        sent = copies.create_registry_indexes(plan.server(), pair.target, pair.db_schema)
        rec.details.update(target=pair.target, statements=sent)
    for statement in sent:
        get_run_logger().info("%s", statement)
    return sent
