"""The apim_upgrade bookkeeping schema: one owner, versioned, adopted, raced, refused when newer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from apim_upgrade.postgres import bookkeeping, db, history, queries, schema_runner
from apim_upgrade.postgres.catalog import take_snapshot
from apim_upgrade.proof import audit
from tests.conftest import unique

# What the previous releases created, table by table, on the fly (their CREATE ... IF NOT
# EXISTS statements, verbatim): migration 1 must adopt a copy holding exactly this.
OLD_STYLE_DDL = """
CREATE SCHEMA IF NOT EXISTS apim_upgrade;
CREATE TABLE IF NOT EXISTS apim_upgrade.audit_log (
    seq bigint PRIMARY KEY, recorded_at timestamptz NOT NULL, plan_name text NOT NULL,
    flow_run_id text, phase text NOT NULL, step text NOT NULL, started_at timestamptz,
    ended_at timestamptz, actor text NOT NULL, inputs_digest text NOT NULL, outcome text NOT NULL,
    record jsonb NOT NULL, prev_sha256 text NOT NULL, sha256 text NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS apim_upgrade.completed_steps (
    phase text NOT NULL, step text NOT NULL, completed_at timestamptz NOT NULL DEFAULT now(),
    flow_run_id text, evidence jsonb NOT NULL DEFAULT '{}', PRIMARY KEY (phase, step)
);
CREATE TABLE IF NOT EXISTS apim_upgrade.schema_history (
    installed_rank integer PRIMARY KEY, from_version text NOT NULL, to_version text NOT NULL,
    script text NOT NULL, sha256 text NOT NULL, statements integer NOT NULL,
    duration_ms integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL, flow_run_id text, rebaselined_from text, UNIQUE (from_version, to_version)
);
CREATE TABLE IF NOT EXISTS apim_upgrade.checkpoints (
    phase text NOT NULL, label text NOT NULL, taken_at timestamptz NOT NULL DEFAULT now(),
    snapshot jsonb NOT NULL, PRIMARY KEY (phase, label)
);
INSERT INTO apim_upgrade.completed_steps (phase, step) VALUES ('prepare-databases', 'done');
INSERT INTO apim_upgrade.schema_history (installed_rank, from_version, to_version, script, sha256,
    statements, duration_ms, applied_by) VALUES (1, '4.2.0', '4.3.0', 'a.sql', 'abc', 3, 10, 'old');
INSERT INTO apim_upgrade.checkpoints (phase, label, snapshot) VALUES ('schema-upgrade', 'at-4.2.0', '{}');
"""
OLD_TABLES = ("audit_log", "checkpoints", "completed_steps", "schema_history")


@pytest.fixture
def scratch(pg: db.PgServer) -> Iterator[str]:
    """An empty database, dropped afterwards; this process has not seen it yet."""
    name = unique("apim_bk")
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, queries.create_scratch_database(name))
    try:
        yield name
    finally:
        with db.session(pg, "postgres", autocommit=True) as conn:
            db.execute(conn, queries.drop_database(name))


def _structure(pg: db.PgServer, dbname: str) -> dict[str, Any]:
    """Columns (type, nullability, default), keys and indexes of the bookkeeping schema."""
    with db.session(pg, dbname, read_only=True) as conn:
        return {
            "columns": db.fetch_all(conn, queries.CATALOG_COLUMNS, (queries.HISTORY_SCHEMA,)),
            "keys": db.fetch_all(conn, queries.CATALOG_PRIMARY_KEYS, (queries.HISTORY_SCHEMA,)),
            "indexes": [r[:3] for r in db.fetch_all(conn, queries.CATALOG_INDEXES, (queries.HISTORY_SCHEMA,))],
        }


def _without(structure: dict[str, Any], table: str) -> dict[str, Any]:
    return {aspect: [r for r in rows if r[0] != table] for aspect, rows in structure.items()}


def _schema_exists(pg: db.PgServer, dbname: str) -> bool:
    with db.session(pg, dbname, read_only=True) as conn:
        return bool(db.fetch_all(conn, "SELECT 1 FROM pg_namespace WHERE nspname = 'apim_upgrade'"))


def _versions(pg: db.PgServer, dbname: str) -> list[tuple[Any, ...]]:
    with db.session(pg, dbname, read_only=True) as conn:
        return db.fetch_all(conn, "SELECT version, description FROM apim_upgrade.bookkeeping_version ORDER BY 1")


def _record(tmp_path: Path) -> list[audit.AuditRecord]:
    path = tmp_path / "audit.jsonl"
    now = datetime.now(UTC)
    audit.append_record(
        path, plan="p", plan_digest="d" * 64, phase="x", step="y", started_at=now, ended_at=now, outcome="succeeded"
    )
    return audit.read_records(path)


def test_readers_of_a_fresh_database_create_nothing_then_the_first_writer_migrates(
    pg: db.PgServer, scratch: str, tmp_path: Path
) -> None:
    empty = bookkeeping.state(pg, scratch)
    assert (empty.version, empty.completed_steps, empty.applied_scripts, empty.checkpoints) == (0, (), (), ())
    assert history.completed(pg, scratch, "p", "s") is None
    assert audit.compare_with_database(pg, scratch, []) == [f"database '{scratch}' holds no apim_upgrade.audit_log yet"]
    with db.session(pg, scratch, read_only=True) as conn:
        assert schema_runner.read_history(conn) == []
    history.forget(pg, scratch, "p", "s")
    assert not _schema_exists(pg, scratch), "a reader (or forget with nothing to forget) created the schema"

    history.mark_done(pg, scratch, "p", "s", "run-1", {"n": 1})
    history.checkpoint(pg, scratch, "p", "before", lambda: take_snapshot(pg, scratch))
    assert audit.sync_to_database(pg, scratch, _record(tmp_path)) == 1
    assert _versions(pg, scratch) == [(1, "audit_log, completed_steps, schema_history, checkpoints")]

    done = bookkeeping.state(pg, scratch)
    assert done.version == bookkeeping.VERSION == 1
    assert done.completed_steps == (("p", "s"),)
    assert done.checkpoints == (("p", "before"),)
    assert done.audit_records == 1
    with db.session(pg, scratch, read_only=True) as conn:
        assert bookkeeping.present(conn).tables == {"bookkeeping_version", *OLD_TABLES}


def test_migration_adopts_tables_made_by_the_previous_release(pg: db.PgServer, scratch: str, tmp_path: Path) -> None:
    with db.session(pg, scratch) as conn:
        db.execute_script(conn, OLD_STYLE_DDL)
    old = _structure(pg, scratch)
    before = bookkeeping.state(pg, scratch)  # read as it is: unversioned, with its rows
    assert before.version == 0 and before.completed_steps == (("prepare-databases", "done"),)
    assert [s.script for s in before.applied_scripts] == ["a.sql"]
    assert old["columns"] and _structure(pg, scratch) == old  # reading wrote nothing

    assert audit.sync_to_database(pg, scratch, _record(tmp_path)) == 1
    after = bookkeeping.state(pg, scratch)
    assert after.version == 1
    assert (after.completed_steps, after.applied_scripts, after.checkpoints) == (
        before.completed_steps,
        before.applied_scripts,
        before.checkpoints,
    )
    assert after.audit_records == 1
    # The four tables are exactly as the previous release made them; only the version table is new.
    assert _without(_structure(pg, scratch), "bookkeeping_version") == old


def test_migration_creates_the_previous_releases_columns_exactly(pg: db.PgServer, scratch: str) -> None:
    other = unique("apim_bk")
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, queries.create_scratch_database(other))
    try:
        with db.session(pg, other) as conn:
            db.execute_script(conn, OLD_STYLE_DDL)
        history.mark_done(pg, scratch, "p", "s", None)
        assert _without(_structure(pg, scratch), "bookkeeping_version") == _structure(pg, other)
    finally:
        with db.session(pg, "postgres", autocommit=True) as conn:
            db.execute(conn, queries.drop_database(other))


def _blocked(pg: db.PgServer, application_name: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    with db.session(pg, "postgres", autocommit=True) as conn:
        while time.monotonic() < deadline:
            if db.fetch_one(
                conn,
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                (application_name,),
            ):
                return True
            time.sleep(0.05)
    return False


def test_two_first_writers_at_once_migrate_once(pg: db.PgServer, scratch: str) -> None:
    """A holds the migration's transaction open; B, meanwhile, waits on the lock, then finds it done."""
    first_migrated, release_first = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    second_name = unique("bk-second")

    def first() -> None:
        try:
            with db.session(pg, scratch) as conn:
                bookkeeping.ensure(conn)
                first_migrated.set()
                release_first.wait(30)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)
            first_migrated.set()

    def second() -> None:
        try:
            with db.session(pg, scratch, application_name=second_name) as conn:
                bookkeeping.ensure(conn)
                db.execute(conn, queries.upsert_completed_step(), ("p", "second", None, "{}"))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    a = threading.Thread(target=first, daemon=True)
    a.start()
    assert first_migrated.wait(30)
    b = threading.Thread(target=second, daemon=True)
    b.start()
    try:
        assert _blocked(pg, second_name), "the second writer did not wait for the first one's migration"
    finally:
        release_first.set()
        a.join(30)
        b.join(30)
    assert not errors, errors
    assert _versions(pg, scratch) == [(1, "audit_log, completed_steps, schema_history, checkpoints")]
    assert bookkeeping.state(pg, scratch).completed_steps == (("p", "second"),)


def test_two_writers_racing_from_two_threads(pg: db.PgServer, scratch: str) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait(10)
            history.mark_done(pg, scratch, "p", f"step-{n}", None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(_versions(pg, scratch)) == 1
    assert len(bookkeeping.state(pg, scratch).completed_steps) == 4


def test_a_newer_bookkeeping_version_is_refused_by_writers_and_readers(pg: db.PgServer, scratch: str) -> None:
    history.mark_done(pg, scratch, "p", "s", None)
    with db.session(pg, scratch) as conn:
        db.execute(conn, queries.insert_bookkeeping_version(), (bookkeeping.VERSION + 1, "from the future"))
    bookkeeping._current.clear()  # another process: it has not seen this copy current yet
    with pytest.raises(bookkeeping.BookkeepingTooNew) as writer:
        history.mark_done(pg, scratch, "p", "t", None)
    message = str(writer.value)
    assert f"database '{scratch}'" in message and f"version {bookkeeping.VERSION + 1}" in message
    assert "newer" in message and "Run that newer apim-upgrade" in message and "\n" not in message
    with pytest.raises(bookkeeping.BookkeepingTooNew):
        history.completed(pg, scratch, "p", "s")
    with pytest.raises(bookkeeping.BookkeepingTooNew):
        bookkeeping.state(pg, scratch)


def test_a_rebuilt_copy_under_the_same_name_is_migrated_again(pg: db.PgServer, scratch: str) -> None:
    history.mark_done(pg, scratch, "p", "s", None)  # this process now knows the copy as current
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, queries.drop_database(scratch))
        db.execute(conn, queries.create_scratch_database(scratch))
    history.mark_done(pg, scratch, "p", "again", None)
    assert bookkeeping.state(pg, scratch).completed_steps == (("p", "again"),)
