"""Database faults during a phase: a terminated backend, a restarted server.

Each ends in a retry (the server rolled the open transaction back, so the whole step runs
again in a new one) or in one clear line; never in a half-applied script or a copy marked
verified that is not. The faults are real: a test holds a lock the phase needs, finds the
phase's blocked session in pg_stat_activity by its application_name, and terminates it or
restarts the (throwaway) server under it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tomli_w
from pydantic import SecretStr

from apim_upgrade.errors import DatabaseUnavailable, PostgresUnavailable
from apim_upgrade.plan import Plan, load_plan
from apim_upgrade.postgres import copies, db, queries, schema_runner
from apim_upgrade.postgres.catalog import take_snapshot
from apim_upgrade.postgres.schema_diff import read_catalog
from apim_upgrade.postgres.sqlscript import load_script
from apim_upgrade.proof import audit
from flows.phases import run_phase
from sandbox.create import create_sandbox
from sandbox.pgserver import ServerHandle, start_throwaway
from sandbox.schema_sync import copy_at_version, generate_upgrade_script
from tests.conftest import unique

pytestmark = pytest.mark.usefixtures("prefect_api")
COMPACT = Path(__file__).resolve().parents[1] / "sandbox" / "sql" / "compact"
APIM_DDL = Path("apimgt") / "postgresql.sql"
# The stand-in 4.2.0 -> 4.3.0 script alters this table in its third statement: a lock on it
# stops the script after its first two statements ran inside the script's transaction.
BLOCKING_TABLE = "am_deployment_revision_mapping"


@pytest.fixture(scope="module")
def script_430(pg: db.PgServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "4.2.0-4.3.0.sql"
    return generate_upgrade_script(pg, COMPACT / "4.2.0" / APIM_DDL, COMPACT / "4.3.0" / APIM_DDL, out, title="x")


def _bring_to_420(server: db.PgServer, plan_path: Path, script: Path) -> Plan:
    """Copies of the sources at the 4.2.0 schema, and a schema_upgrade section with one script."""
    plan = load_plan(plan_path)
    for role, ddl in (("apim", APIM_DDL), ("shared", Path("postgresql.sql"))):
        pair = plan.databases.roles()[role]
        copy_at_version(server, pair.source, pair.target, pair.owner, COMPACT / "4.2.0" / ddl)
    section = {
        "schema_upgrade": {
            "start_version": "4.2.0",
            "scripts": [
                {
                    "from_version": "4.2.0",
                    "to_version": "4.3.0",
                    "path": str(script),
                    "dbscripts": str(COMPACT / "4.3.0"),
                }
            ],
            "target_dbscripts": str(COMPACT / "4.3.0"),
        }
    }
    plan_path.write_text(plan_path.read_text() + "\n" + tomli_w.dumps(section))
    return load_plan(plan_path)


class Saboteur(threading.Thread):
    """Runs ``act`` beside the phase; keeps its result or error for the test to assert on."""

    def __init__(self, act: Callable[[], dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.act = act
        self.seen: dict[str, Any] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.seen = self.act()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            self.error = exc

    def result(self) -> dict[str, Any]:
        self.join(timeout=60)
        if self.error is not None:
            raise self.error
        return self.seen


def _blocked_backend(server: db.PgServer, application_name: str, timeout: float = 30) -> int:
    """The pid of the session with this application_name prefix once it waits on a lock."""
    deadline = time.monotonic() + timeout
    with db.session(server, "postgres", autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = db.fetch_one(
                conn,
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s AND wait_event_type = 'Lock'",
                (application_name + "%",),
            )
            if row:
                return int(row[0])
            time.sleep(0.05)
    raise AssertionError(f"no session '{application_name}...' blocked within {timeout} s")


def _terminate(server: db.PgServer, pid: int) -> None:
    with db.session(server, "postgres", autocommit=True) as conn:
        assert db.fetch_one(conn, "SELECT pg_terminate_backend(%s, 10000)", (pid,)) == (True,)


def _postmaster_start(server: db.PgServer) -> Any:
    with db.session(server, "postgres", autocommit=True) as conn:
        row = db.fetch_one(conn, "SELECT pg_postmaster_start_time()")
    assert row is not None
    return row[0]


def _history(server: db.PgServer, dbname: str) -> list[schema_runner.AppliedScript]:
    with db.session(server, dbname, read_only=True) as conn:
        return schema_runner.read_history(conn)


def _structure(server: db.PgServer, dbname: str) -> dict[str, Any]:
    """Tables, columns, keys, indexes and sequences (not the database's name)."""
    return read_catalog(server, dbname).model_dump(exclude={"database"})


def _records(plan: Plan, step: str) -> list[audit.AuditRecord]:
    return [r for r in audit.read_records(plan.audit_path) if r.step == step]


def _assert_one_clear_line(message: str, server: db.PgServer, dbname: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    assert f"{server.host}:{server.port}/{dbname}" in message, message
    assert "lost the connection" in message and "rerun" in message.lower(), message


def test_backend_terminated_mid_script_rolls_back_and_the_retry_completes(
    make_sandbox: Callable[..., Path], pg: db.PgServer, script_430: Path
) -> None:
    plan = _bring_to_420(pg, make_sandbox(), script_430)
    target = plan.databases.apim.target
    script = load_script(script_430, "4.2.0", "4.3.0")
    blocked_at = next(s for s in script.statements if BLOCKING_TABLE in s.text)
    assert blocked_at.number > 2, "the lock must stop the script after some of its statements ran"

    # What an uninterrupted run gives: the same script on a copy of the same 4.2.0 database.
    reference = unique("apim_t_ref")
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, queries.create_database_from_template(reference, target, plan.databases.apim.owner, None))
    try:
        schema_runner.apply_script(pg, reference, script, 1, run_as=plan.databases.apim.owner)
        catalog_before = read_catalog(pg, target)
        locker = db.connect(pg, target)
        db.execute(locker, f"LOCK TABLE {BLOCKING_TABLE} IN SHARE MODE")  # readers pass, the ALTER waits

        def terminate_mid_script() -> dict[str, Any]:
            pid = _blocked_backend(pg, schema_runner.SCRIPT_APPLICATION_NAME)
            _terminate(pg, pid)
            seen = {"catalog": read_catalog(pg, target), "history": _history(pg, target)}
            locker.rollback()  # the retry may now pass
            return seen

        saboteur = Saboteur(terminate_mid_script)
        saboteur.start()
        try:
            outcome = run_phase("schema-upgrade", plan)
        finally:
            locker.close()
        seen = saboteur.result()

        # Right after the kill: not one of the statements that had run is there, no history row.
        assert seen["catalog"] == catalog_before and seen["history"] == []
        # The retry applied the whole script once, in a new transaction: as if never interrupted.
        assert outcome.startswith("1 script(s) applied")
        assert _structure(pg, target) == _structure(pg, reference)
        assert take_snapshot(pg, target).row_counts == take_snapshot(pg, reference).row_counts
        assert [(h.script, h.sha256) for h in _history(pg, target)] == [(script.name, script.sha256)]

        # The audit trail shows the lost attempt, with its one clear line, then the retry.
        applies = _records(plan, "apply_sql_script")
        assert [r.outcome for r in applies] == ["failed", "succeeded"]
        error = applies[0].details["error"]
        _assert_one_clear_line(error, pg, target)
        assert str(script_430) in error and f"statement {blocked_at.number} of {len(script.statements)}" in error
        assert "nothing of the script was committed" in error
        assert applies[1].details.get("attempt") == 2
    finally:
        with db.session(pg, "postgres", autocommit=True) as conn:
            db.execute(conn, queries.drop_database(reference))


def test_backend_terminated_during_create_database_then_copies_verified(
    make_sandbox: Callable[..., Path], pg: db.PgServer
) -> None:
    plan = load_plan(make_sandbox())
    pair = plan.databases.apim
    # CREATE DATABASE ... TEMPLATE takes a share lock on its source database; an open
    # COMMENT ON DATABASE holds a conflicting one (and is rolled back: the source is untouched).
    locker = db.connect(pg, "postgres")
    db.execute(locker, queries.comment_on_database(pair.source, "held by test_db_faults"))

    def terminate_create_database() -> dict[str, Any]:
        pid = _blocked_backend(pg, copies.COPY_APPLICATION_NAME)
        _terminate(pg, pid)
        with db.session(pg, "postgres", autocommit=True) as conn:
            info = db.fetch_one(conn, queries.DATABASE_INFO, ([pair.target],))
        locker.rollback()
        return {"target": info}

    saboteur = Saboteur(terminate_create_database)
    saboteur.start()
    try:
        outcome = run_phase("prepare-databases", plan)
    finally:
        locker.close()
    assert saboteur.result()["target"] is None  # nothing half-made was left behind
    assert outcome == {"apim": "copied and verified", "shared": "copied and verified"}

    copies_made = _records(plan, "copy_database")
    apim = [r.outcome for r in copies_made if r.details.get("target") == pair.target]
    assert apim == ["started", "failed", "started", "succeeded"], apim
    error = next(r for r in copies_made if r.outcome == "failed").details["error"]
    _assert_one_clear_line(error, pg, plan.postgres.maintenance_db)
    assert f"copying '{pair.source}' to '{pair.target}'" in error
    for role in ("apim", "shared"):
        state = copies.target_state(
            pg, "postgres", plan, plan.databases.roles()[role].source, plan.databases.roles()[role].target, False
        )
        assert state is copies.CopyState.VERIFIED
    assert run_phase("prepare-databases", plan) == {"apim": "skipped (verified)", "shared": "skipped (verified)"}


@pytest.fixture
def throwaway() -> Iterator[ServerHandle]:
    try:
        handle = start_throwaway()
    except PostgresUnavailable as exc:
        pytest.skip(f"no local PostgreSQL binaries to start a throwaway cluster we may restart: {exc}")
    yield handle
    handle.stop()


def test_server_restart_mid_script_retries_after_it_is_back(
    throwaway: ServerHandle, tmp_path: Path, script_430: Path
) -> None:
    server = throwaway.server
    plan_path, _ = create_sandbox(tmp_path / "sb", server, prefix=unique("apim_t"), with_distribution=False)
    plan = _bring_to_420(server, plan_path, script_430)
    target = plan.databases.apim.target
    script = load_script(script_430, "4.2.0", "4.3.0")
    started_at = _postmaster_start(server)
    locker = db.connect(server, target)
    db.execute(locker, f"LOCK TABLE {BLOCKING_TABLE} IN SHARE MODE")

    def restart_mid_script() -> dict[str, Any]:
        _blocked_backend(server, schema_runner.SCRIPT_APPLICATION_NAME)
        throwaway.restart("fast")  # ends every session, ours and the phase's, then waits until up
        return {}

    saboteur = Saboteur(restart_mid_script)
    saboteur.start()
    try:
        outcome = run_phase("schema-upgrade", plan)
    finally:
        locker.close()
    saboteur.result()

    assert _postmaster_start(server) > started_at  # it really was restarted under the phase
    # Had any statement of the first attempt been committed, the retry's ADD COLUMN would have failed.
    assert outcome.startswith("1 script(s) applied") and outcome.endswith("conforms to 4.4.0")
    assert [(h.script, h.sha256) for h in _history(server, target)] == [(script.name, script.sha256)]
    applies = _records(plan, "apply_sql_script")
    # A retry may also find the server still starting (refused, retried again after a longer delay).
    outcomes = [r.outcome for r in applies]
    assert outcomes[-1] == "succeeded" and set(outcomes[:-1]) == {"failed"}, outcomes
    _assert_one_clear_line(applies[0].details["error"], server, target)
    assert "nothing of the script was committed" in applies[0].details["error"]
    assert run_phase("schema-upgrade", plan).startswith("0 script(s) applied, 1 already applied")


def test_lost_connection_is_one_line_naming_server_database_and_activity_never_the_password(
    pg: db.PgServer,
) -> None:
    secret = "s3cret-" + unique("pw")
    server = db.PgServer(host=pg.host, port=pg.port, user=pg.user, password=SecretStr(secret))
    with pytest.raises(DatabaseUnavailable) as err:
        with db.session(server, "postgres", activity="counting rows of 'wso2am_am'") as conn:
            pid = db.fetch_one(conn, "SELECT pg_backend_pid()")
            assert pid is not None
            _terminate(pg, int(pid[0]))
            db.fetch_one(conn, "SELECT 1")
    message = str(err.value)
    _assert_one_clear_line(message, pg, "postgres")
    assert "while counting rows of 'wso2am_am'" in message and "nothing uncommitted was kept" in message
    assert secret not in message and err.value.__cause__ is None
    assert err.value.__suppress_context__  # no psycopg traceback chained to it

    # A session the server ends is transient; a failing statement is not.
    assert db.connection_lost(psycopg.errors.AdminShutdown()) and db.connection_lost(psycopg.OperationalError())
    assert not db.connection_lost(psycopg.errors.QueryCanceled())
    assert not db.connection_lost(psycopg.errors.UndefinedTable())


def test_retry_after_a_commit_that_took_effect_does_not_apply_the_script_again(pg: db.PgServer, tmp_path: Path) -> None:
    """A connection lost *at* COMMIT leaves the script all or nothing; the retry finds out which."""
    dbname = unique("apim_t_once")
    path = tmp_path / "once-4.2.0-to-4.3.0.sql"
    path.write_text("CREATE TABLE applied_once (id integer);\nINSERT INTO applied_once VALUES (1);\n")
    script = load_script(path, "4.2.0", "4.3.0")
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, queries.create_scratch_database(dbname))
    try:
        first = schema_runner.apply_script(pg, dbname, script, 1)
        # The retry of a task whose commit took effect: recorded, so returned, not run again.
        assert schema_runner.apply_script(pg, dbname, script, 1) == first
        with db.session(pg, dbname, read_only=True) as conn:
            assert db.fetch_one(conn, "SELECT count(*) FROM applied_once") == (1,)
    finally:
        with db.session(pg, "postgres", autocommit=True) as conn:
            db.execute(conn, queries.drop_database(dbname))


def test_run_lock_lost_with_its_session_is_taken_again_and_released_quietly(pg: db.PgServer) -> None:
    key = unique("estate")
    with schema_runner.advisory_lock(pg, "postgres", key, "run-by-carol", "testing") as lock:
        assert lock.conn is not None and lock.ensure() is False  # held: nothing to do
        _terminate(pg, lock.conn.info.backend_pid)  # as a server restart would: the lock goes with it
        with schema_runner.advisory_lock(pg, "postgres", key, "run-by-dave", "testing"):
            pass  # free in between: another run could have taken it...
        assert lock.ensure() is True  # ...so the holder takes it again before its next step
        with pytest.raises(schema_runner.UpgradeLocked, match="'run-by-carol'"):
            with schema_runner.advisory_lock(pg, "postgres", key, "run-by-dave", "testing"):
                pass
        _terminate(pg, lock.conn.info.backend_pid)
    # Leaving the block on a dead session is quiet: the server released the lock already.
    with schema_runner.advisory_lock(pg, "postgres", key, "run-by-dave", "testing"):
        pass
