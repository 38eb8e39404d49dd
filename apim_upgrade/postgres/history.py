"""Which steps have completed against the target API-M database (the resume truth).

Like Flyway's history table, it lives in the database it describes: when a
copy is rebuilt, its history is gone with it and every later step runs again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from apim_upgrade.postgres import db, queries
from apim_upgrade.postgres.catalog import Snapshot


def mark_done(
    server: db.PgServer,
    dbname: str,
    phase: str,
    step: str,
    flow_run_id: str | None,
    evidence: dict[str, Any] | None = None,
) -> None:
    with db.session(server, dbname) as conn:
        db.execute_script(conn, queries.create_completed_steps().as_string(conn))
        db.execute(
            conn,
            queries.upsert_completed_step(),
            (phase, step, flow_run_id, json.dumps(evidence or {}, default=str)),
        )


def completed(server: db.PgServer, dbname: str, phase: str, step: str) -> tuple[datetime, dict[str, Any]] | None:
    """When the step completed on this database and its evidence, or None."""
    with db.session(server, dbname, read_only=True) as conn:
        exists = db.fetch_one(conn, queries.COMPLETED_STEPS_EXISTS)
        if not exists or not exists[0]:
            return None
        row = db.fetch_one(conn, queries.select_completed_step(), (phase, step))
    if row is None:
        return None
    return row[0], dict(row[2] or {})


def checkpoint(server: db.PgServer, dbname: str, phase: str, label: str, take: Callable[[], Snapshot]) -> Snapshot:
    """The snapshot stored under (phase, label), or a new one taken now and stored.

    A step's "before" must be the state before its *first* attempt: a rerun after a
    crash or a failed gate compares with that, not with what the failed attempt left.
    It lives in the target database, so a rebuilt copy starts without it.
    """
    with db.session(server, dbname) as conn:
        exists = db.fetch_one(conn, queries.CHECKPOINTS_EXIST)
        if exists and exists[0]:
            row = db.fetch_one(conn, queries.select_checkpoint(), (phase, label))
            if row is not None:
                return Snapshot.model_validate_json(row[0])
        snap = take()
        db.execute_script(conn, queries.create_checkpoints().as_string(conn))
        db.execute(conn, queries.insert_checkpoint(), (phase, label, snap.model_dump_json()))
    return snap


def forget(server: db.PgServer, dbname: str, phase: str, step: str) -> None:
    """Undo mark_done (a rollback returns the estate to before the phase)."""
    with db.session(server, dbname) as conn:
        exists = db.fetch_one(conn, queries.COMPLETED_STEPS_EXISTS)
        if exists and exists[0]:
            db.execute(conn, queries.delete_completed_step(), (phase, step))
