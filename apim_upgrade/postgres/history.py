"""Which steps have completed against the target API-M database (the resume truth).

Like Flyway's history table, it lives in the database it describes: when a
copy is rebuilt, its history is gone with it and every later step runs again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from apim_upgrade.postgres import bookkeeping, db, queries
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
        bookkeeping.ensure(conn)
        db.execute(
            conn,
            queries.upsert_completed_step(),
            (phase, step, flow_run_id, json.dumps(evidence or {}, default=str)),
        )


def completed(server: db.PgServer, dbname: str, phase: str, step: str) -> tuple[datetime, dict[str, Any]] | None:
    """When the step completed on this database and its evidence, or None."""
    with db.session(server, dbname, read_only=True) as conn:
        return bookkeeping.completed_step(conn, phase, step)


def checkpoint(server: db.PgServer, dbname: str, phase: str, label: str, take: Callable[[], Snapshot]) -> Snapshot:
    """The snapshot stored under (phase, label), or a new one taken now and stored.

    A step's "before" must be the state before its *first* attempt: a rerun after a
    crash or a failed gate compares with that, not with what the failed attempt left.
    It lives in the target database, so a rebuilt copy starts without it.
    """
    with db.session(server, dbname) as conn:
        stored = bookkeeping.stored_checkpoint(conn, phase, label)
    if stored is not None:
        return Snapshot.model_validate_json(stored)
    # Taken with no session of ours left open on the database: an incremental snapshot waits for
    # other sessions to end (their counters may be unflushed) and, while one stays, counts every table.
    snap = take()
    with db.session(server, dbname) as conn:
        bookkeeping.ensure(conn)
        stored = bookkeeping.stored_checkpoint(conn, phase, label)  # one writer per estate: never, but exact
        if stored is not None:
            return Snapshot.model_validate_json(stored)
        db.execute(conn, queries.insert_checkpoint(), (phase, label, snap.model_dump_json()))
    return snap


def latest(server: db.PgServer, dbname: str, database: str, *extra: Snapshot | None) -> Snapshot | None:
    """The newest snapshot of ``database`` among the checkpoints stored in ``dbname`` and ``extra``.

    Only the base of an incremental snapshot: which one it is changes what is counted, never
    what is proven (a stale or foreign base proves nothing: its facts or epoch differ)."""
    found = [s for s in extra if s is not None and s.database == database]
    with db.session(server, dbname, read_only=True) as conn:
        if bookkeeping.present(conn).has("checkpoints"):
            row = db.fetch_one(conn, queries.latest_checkpoint_of(), (database,))
            if row is not None:
                found.append(Snapshot.model_validate_json(str(row[0])))
    return max(found, key=lambda s: s.taken_at, default=None)


def forget(server: db.PgServer, dbname: str, phase: str, step: str) -> None:
    """Undo mark_done (a rollback returns the estate to before the phase)."""
    with db.session(server, dbname) as conn:
        if bookkeeping.present(conn).has("completed_steps"):  # nothing recorded: nothing to undo
            db.execute(conn, queries.delete_completed_step(), (phase, step))
