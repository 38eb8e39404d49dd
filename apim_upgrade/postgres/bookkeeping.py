"""apim-upgrade's own schema in the target database: created, versioned and read here only.

The ``apim_upgrade`` schema holds what has been done to *this* copy: the audit trail's
database copy (``audit_log``), the steps completed (``completed_steps``, the resume truth),
the vendor scripts applied (``schema_history``) and the "before" snapshots of steps
(``checkpoints``). Like Alembic's ``alembic_version`` it carries its own version
(``bookkeeping_version``): :func:`ensure` applies the numbered migrations of
``queries.bookkeeping_migrations`` the database lacks, once, under a transaction-level
advisory lock, in the writer's own transaction (a write that rolls back takes the schema
change with it). Readers never create anything: :func:`present` and :func:`state` report an
absent schema as empty. A schema written by a newer apim-upgrade is refused by both.

A rebuilt copy starts without the schema, so everything in it starts again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apim_upgrade.errors import DatabaseError
from apim_upgrade.postgres import db, queries

SCHEMA = queries.HISTORY_SCHEMA
VERSION_TABLE = "bookkeeping_version"
# The newest migration this code knows (and writes).
VERSION = max(version for version, _, _ in queries.bookkeeping_migrations())

# Databases whose schema this process has seen at VERSION, by (host, port, dbname, oid): the
# oid changes when a copy is dropped and rebuilt under the same name, so a rebuilt copy is
# migrated again. Checked with one catalogue read per writer session.
_current: set[tuple[str, int, str, int]] = set()
_current_guard = threading.Lock()


class BookkeepingTooNew(DatabaseError):
    """The database's bookkeeping schema was written by a newer apim-upgrade."""

    @classmethod
    def found(cls, dbname: str, version: int) -> BookkeepingTooNew:
        return cls(
            f"database '{dbname}' holds apim-upgrade bookkeeping version {version} "
            f"({SCHEMA}.{VERSION_TABLE}), newer than this apim-upgrade knows (up to {VERSION}): a newer "
            "apim-upgrade has worked on this copy. Run that newer apim-upgrade (or a later one) against it; "
            "do not edit the bookkeeping schema by hand"
        )


@dataclass(frozen=True)
class AppliedScript:
    """A vendor script recorded in schema_history."""

    rank: int
    from_version: str
    to_version: str
    script: str
    sha256: str
    statements: int
    duration_ms: int


@dataclass(frozen=True)
class Present:
    """Which bookkeeping tables a database holds, and their version (0: unversioned or none)."""

    version: int
    tables: frozenset[str]

    def has(self, table: str) -> bool:
        return table in self.tables


@dataclass(frozen=True)
class CopyBookkeeping:
    """What is done on this copy, in one place: what a rerun will skip."""

    dbname: str
    version: int  # 0: no bookkeeping schema (or one from before it was versioned)
    marker: dict[str, Any] | None  # the copy's ownership marker (its database comment)
    completed_steps: tuple[tuple[str, str], ...]  # (phase, step)
    applied_scripts: tuple[AppliedScript, ...]
    checkpoints: tuple[tuple[str, str], ...]  # (phase, label)
    audit_records: int


# --- writers --------------------------------------------------------------------------------


def ensure(conn: db.AnyConnection) -> None:
    """Bring the bookkeeping schema to VERSION inside ``conn``'s open transaction.

    Cheap when already current (one catalogue read once this process has seen the copy
    current). Two sessions migrating the same copy serialise on a transaction-level advisory
    lock; the second finds the work done. On a recording
    connection (dry run) the migrations are recorded, not applied.
    """
    probe = db.probe(conn, queries.BOOKKEEPING_PROBE)
    if probe is None:  # current_database() is always in pg_database
        raise DatabaseError("cannot read the current database from pg_database")
    oid, dbname, versioned = int(probe[0]), str(probe[1]), bool(probe[2])
    host, port, _ = db.address(conn)
    key = (host, port, dbname, oid)
    if isinstance(conn, db.RecordingConnection):
        # A dry run remembers what it recorded on its own: nothing of it reached the database.
        seen = conn.recorder.done
        if key in seen:
            return
    else:
        seen = _current
    if versioned:
        if key in seen:
            return
        version = _version(conn)
        if version > VERSION:
            raise BookkeepingTooNew.found(dbname, version)
        if version == VERSION:
            _remember(seen, key)
            return
    db.execute(conn, queries.BOOKKEEPING_LOCK, (queries.ADVISORY_NAMESPACE,))
    version = _version(conn)  # again: a session that held the lock before us may have migrated
    if version > VERSION:
        raise BookkeepingTooNew.found(dbname, version)
    for number, description, ddl in queries.bookkeeping_migrations():
        if number > version:
            db.execute_script(conn, ddl)
            db.execute(conn, queries.insert_bookkeeping_version(), (number, description))
    # Remembered before the caller commits: if it rolls back, the version table goes too,
    # and the probe's "versioned" is false again next time.
    _remember(seen, key)


def _remember(seen: set[Any], key: tuple[str, int, str, int]) -> None:
    with _current_guard:
        seen.add(key)


def _version(conn: db.AnyConnection) -> int:
    """The recorded version (0 when the version table does not exist), read after the lock."""
    exists = db.probe(conn, queries.BOOKKEEPING_VERSION_TABLE_EXISTS)
    if not exists or not exists[0]:
        return 0
    row = db.probe(conn, queries.bookkeeping_version())
    return int(row[0]) if row and row[0] is not None else 0


# --- readers (never write: read-only sessions, sources included) ------------------------------


def present(conn: db.Connection) -> Present:
    """The bookkeeping tables of the database and their version; refuses a newer version."""
    tables = frozenset(str(t) for (t,) in db.fetch_all(conn, queries.TABLES, (SCHEMA,)))
    version = 0
    if VERSION_TABLE in tables:
        row = db.fetch_one(conn, queries.bookkeeping_version())
        version = int(row[0]) if row and row[0] is not None else 0
        if version > VERSION:
            raise BookkeepingTooNew.found(conn.info.dbname, version)
    return Present(version, tables)


def applied_scripts(conn: db.Connection, found: Present | None = None) -> list[AppliedScript]:
    """The scripts recorded in schema_history, in order (none when the table is absent)."""
    if not (found or present(conn)).has("schema_history"):
        return []
    return [AppliedScript(*row[:7]) for row in db.fetch_all(conn, queries.select_schema_history())]


def completed_step(conn: db.Connection, phase: str, step: str) -> tuple[datetime, dict[str, Any]] | None:
    """When the step completed on this database and its evidence, or None."""
    if not present(conn).has("completed_steps"):
        return None
    row = db.fetch_one(conn, queries.select_completed_step(), (phase, step))
    return (row[0], dict(row[2] or {})) if row is not None else None


def stored_checkpoint(conn: db.Connection, phase: str, label: str) -> str | None:
    """The JSON of the snapshot stored under (phase, label), or None."""
    if not present(conn).has("checkpoints"):
        return None
    row = db.fetch_one(conn, queries.select_checkpoint(), (phase, label))
    return str(row[0]) if row is not None else None


def state(server: db.PgServer, dbname: str) -> CopyBookkeeping:
    """What is done on ``dbname``, read in one read-only snapshot (empty when nothing is)."""
    from apim_upgrade.postgres.copies import read_marker  # copies needs the plan; keep it off import

    with db.snapshot_transaction(server, dbname, activity="reading apim-upgrade's bookkeeping") as conn:
        found = present(conn)
        info = db.fetch_one(conn, queries.DATABASE_INFO, ([dbname],))
        steps = db.fetch_all(conn, queries.completed_step_names()) if found.has("completed_steps") else []
        labels = db.fetch_all(conn, queries.checkpoint_labels()) if found.has("checkpoints") else []
        count = db.fetch_one(conn, queries.audit_record_count()) if found.has("audit_log") else None
        scripts = applied_scripts(conn, found)
    return CopyBookkeeping(
        dbname=dbname,
        version=found.version,
        marker=read_marker(info[2]) if info else None,
        completed_steps=tuple((str(p), str(s)) for p, s in steps),
        applied_scripts=tuple(scripts),
        checkpoints=tuple((str(p), str(label)) for p, label in labels),
        audit_records=int(count[0]) if count else 0,
    )
