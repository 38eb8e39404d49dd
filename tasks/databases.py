"""Tasks of the prepare-databases phase: small, retryable, idempotent."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger

from apim_upgrade import preflight
from apim_upgrade.errors import DatabaseError, PreflightError
from apim_upgrade.phases import PREPARE_DATABASES
from apim_upgrade.plan import Plan
from apim_upgrade.postgres import copies, snapshot_copy
from apim_upgrade.postgres.catalog import Snapshot, take_snapshot
from apim_upgrade.postgres.snapshot_copy import CopyChoice
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
        rec.details["source_bytes"] = report.source_bytes  # the window forecast scales by growth since
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


@retryable_task("choose_copy_method")
def choose_copy_method(plan: Plan, role: str) -> CopyChoice:
    """Template or snapshot copy for this source: ``copy.method``, and for ``auto`` its other sessions."""
    pair = plan.databases.roles()[role]
    configured = plan.copy_options.method
    with audited_step(plan, PHASE, "choose_copy_method", {"role": role, "configured": configured}) as rec:
        choice = snapshot_copy.choose_method(plan.server(), plan.postgres.maintenance_db, pair.source, configured)
        rec.details.update(
            role=role, source=pair.source, method=choice.method, reason=choice.reason, sessions=choice.sessions
        )
    get_run_logger().info("%s: %s copy (%s)", role, choice.method, choice.reason)
    return choice


def _snapshot_details(role: str, source: str, snap: Snapshot, path: object) -> dict[str, object]:
    return {
        "role": role,
        "source": source,
        "tables": len(snap.row_counts),
        "total_rows": snap.total_rows,
        "digest": snap.digest(),
        "catalog_digest": snap.catalog_digest(),
        "file": str(path),
    }


@retryable_task("snapshot_source")
def snapshot_source(plan: Plan, role: str) -> Snapshot:
    """Exact row counts and catalogue of the source, in one consistent snapshot."""
    pair = plan.databases.roles()[role]
    with audited_step(plan, PHASE, "snapshot_source", {"role": role, "source": pair.source}) as rec:
        snap = take_snapshot(plan.server(), pair.source, pair.db_schema)
        path = snap.save(_snapshot_path(plan, role))
        rec.details.update(_snapshot_details(role, pair.source, snap, path))
    get_run_logger().info(
        "snapshot of %s '%s': %d tables, %d rows", role, pair.source, len(snap.row_counts), snap.total_rows
    )
    return snap


def _snapshot_path(plan: Plan, role: str) -> Path:
    return plan.work_dir / "snapshots" / f"{role}-source.json"


def _check_target(plan: Plan, role: str) -> copies.CopyState:
    """The target's state; a database that is not ours is refused before anything is written."""
    pair = plan.databases.roles()[role]
    state = copies.target_state(
        plan.server(),
        plan.postgres.maintenance_db,
        plan,
        pair.source,
        pair.target,
        pair.target in pending_copies(plan.audit_path),
    )
    if state is copies.CopyState.FOREIGN:
        raise DatabaseError(
            f"database '{pair.target}' exists and was not made by apim-upgrade for plan "
            f"'{plan.name}'; drop it yourself or choose another databases.{role}.target"
        )
    return state


def _rebuild_if_unfinished(plan: Plan, role: str, state: copies.CopyState, details: dict[str, object]) -> None:
    target = plan.databases.roles()[role].target
    if state is copies.CopyState.INCOMPLETE:
        get_run_logger().warning("'%s' is an unfinished copy from an earlier run: rebuilding it", target)
        copies.drop_copy(plan.server(), plan.postgres.maintenance_db, target)
        details["rebuilt"] = True


@retryable_task("copy_database")
def copy_database(plan: Plan, role: str, terminate_connections: bool, choice: CopyChoice) -> str:
    """CREATE DATABASE target WITH TEMPLATE source OWNER owner (rebuilds a half-made copy)."""
    logger = get_run_logger()
    pair = plan.databases.roles()[role]
    server, maint = plan.server(), plan.postgres.maintenance_db
    state = _check_target(plan, role)
    intent = {"role": role, "source": pair.source, "target": pair.target, "method": choice.method}
    with audited_step(plan, PHASE, "copy_database", intent, intent=intent) as rec:
        rec.details["method_reason"] = choice.reason
        _rebuild_if_unfinished(plan, role, state, rec.details)
        if terminate_connections and plan.copy_options.method == "template":  # never under auto
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


@retryable_task("copy_database_online")
def copy_database_online(plan: Plan, role: str, choice: CopyChoice) -> Snapshot:
    """Copy a live source from one exported snapshot; returns that snapshot's counts (the gate's).

    Nobody is disconnected. The counts and catalogue are read in the transaction whose snapshot
    pg_dump reads, so the gate is exact whatever the source's clients write meanwhile.
    """
    logger = get_run_logger()
    pair = plan.databases.roles()[role]
    state = _check_target(plan, role)
    intent = {"role": role, "source": pair.source, "target": pair.target, "method": choice.method}
    with audited_step(plan, PHASE, "copy_database", intent, intent=intent) as rec:
        rec.details.update(method_reason=choice.reason, source_sessions=len(choice.sessions))
        _rebuild_if_unfinished(plan, role, state, rec.details)
        strategy = None if plan.copy_options.strategy == "default" else plan.copy_options.strategy
        made = snapshot_copy.create_snapshot_copy(
            plan.server(),
            plan.postgres.maintenance_db,
            source=pair.source,
            target=pair.target,
            owner=pair.owner,
            schema=pair.db_schema,
            strategy=strategy,
            jobs=plan.copy_options.jobs,
            dump_dir=plan.work_dir / "dumps" / role,
            copying_marker=copies.marker(plan, pair.source, "copying"),
            on_line=lambda line: logger.info("%s", line),
        )
        snap = made.snapshot
        path = snap.save(_snapshot_path(plan, role))
        with audited_step(plan, PHASE, "snapshot_source", {"role": role, "source": pair.source}) as snap_rec:
            snap_rec.details.update(_snapshot_details(role, pair.source, snap, path), snapshot_id=made.snapshot_id)
        rec.details.update(
            statement=made.statement,
            commands=made.commands,
            snapshot_id=made.snapshot_id,
            jobs=plan.copy_options.jobs,
            dump_seconds=round(made.dump_seconds, 2),
            restore_seconds=round(made.restore_seconds, 2),
        )
    logger.info(
        "copied %s online from snapshot %s of '%s': %d tables, %d rows (dump %.1f s, restore %.1f s)",
        role,
        made.snapshot_id,
        pair.source,
        len(snap.row_counts),
        snap.total_rows,
        made.dump_seconds,
        made.restore_seconds,
    )
    return snap


@retryable_task("create_registry_indexes")
def create_registry_indexes(plan: Plan) -> list[str]:
    pair = plan.databases.shared
    with audited_step(plan, PHASE, "create_registry_indexes", {"target": pair.target}) as rec:
        sent = copies.create_registry_indexes(plan.server(), pair.target, pair.db_schema)
        rec.details.update(target=pair.target, statements=sent)
    for statement in sent:
        get_run_logger().info("%s", statement)
    return sent
