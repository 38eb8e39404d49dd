"""The snapshot copy: a live source (sessions held open, a client writing) copied online and exactly.

Real PostgreSQL, real pg_dump/pg_restore, real Prefect API; the "production" sessions are
ordinary connections of this test and a thread that keeps inserting while the phase runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from apim_upgrade.errors import ApimUpgradeError, PreflightError
from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import copies, db, queries
from apim_upgrade.postgres.catalog import Snapshot, take_snapshot
from apim_upgrade.proof import audit
from flows.phases import run_phase
from tests.conftest import unique

pytestmark = pytest.mark.usefixtures("prefect_api")

CONTROL_PLANE = "wso2-control-plane-1"
# What "owned as a template copy would be" means: every relation (tables, sequences, indexes,
# views), schema and extension with its owner and privileges, and the database's owner. The
# apim_upgrade schema is the tool's bookkeeping, added to the copy after it was made.
OWNERS = {
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relacl::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'apim_upgrade')
          AND n.nspname NOT LIKE 'pg_toast%%'
        ORDER BY 1, 2""",
    "schemas": """
        SELECT nspname, pg_get_userbyid(nspowner), nspacl::text FROM pg_namespace
        WHERE nspname NOT LIKE 'pg\\_%%' AND nspname NOT IN ('information_schema', 'apim_upgrade') ORDER BY 1""",
    "extensions": "SELECT extname, pg_get_userbyid(extowner) FROM pg_extension ORDER BY 1",
    "functions": """
        SELECT p.proname, pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'apim_upgrade') ORDER BY 1, 2""",
    "database": """
        SELECT pg_get_userbyid(datdba), datacl::text, pg_encoding_to_char(encoding), datcollate, datctype
        FROM pg_database WHERE datname = current_database()""",
}
SEQUENCES = "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1"
INDEXES = "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2"


def _read(pg: db.PgServer, dbname: str, query: str) -> list[tuple[Any, ...]]:
    with db.session(pg, dbname, read_only=True) as conn:
        return db.fetch_all(conn, query)


def _owners(pg: db.PgServer, dbname: str) -> dict[str, list[tuple[Any, ...]]]:
    found = {name: _read(pg, dbname, query) for name, query in OWNERS.items()}
    # The registry indexes are added to the shared copy after it is made (create_registry_indexes).
    found["relations"] = [r for r in found["relations"] if r[1] not in queries.REGISTRY_INDEXES]
    return found


def _records(plan_path: Path, step: str) -> list[audit.AuditRecord]:
    return [r for r in audit.read_records(load_plan(plan_path).audit_path) if r.step == step]


def _marker_state(pg: db.PgServer, name: str) -> object:
    with db.session(pg, "postgres", read_only=True) as conn:
        row = db.fetch_one(conn, queries.DATABASE_INFO, ([name],))
    return (copies.read_marker(row[2]) or {}).get("state") if row else None


def _set_method(plan_path: Path, method: str) -> None:
    plan_path.write_text(plan_path.read_text().replace('method = "auto"', f'method = "{method}"'))


class Production:
    """The live estate: sessions held open on the sources and a client inserting subscribers."""

    def __init__(self, pg: db.PgServer, sources: list[str], writer_db: str) -> None:
        self.pg = pg
        self.sessions = [db.connect(pg, name, autocommit=True, application_name=CONTROL_PLANE) for name in sources]
        # A pooled connection idle in a transaction that has read a table (it holds its lock).
        idle = db.connect(pg, sources[0], application_name=CONTROL_PLANE)
        db.fetch_all(idle, "SELECT count(*) FROM am_api")
        self.sessions.append(idle)
        self.writer = db.connect(pg, writer_db, autocommit=True, application_name=CONTROL_PLANE)
        self.inserted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        while not self._stop.is_set():
            db.execute(
                self.writer,
                "INSERT INTO am_subscriber (user_id, tenant_id, date_subscribed) VALUES (%s, -1234, now())",
                (f"live-{self.inserted}",),
            )
            self.inserted += 1
            time.sleep(0.005)

    def pids(self) -> list[int]:
        out = []
        for conn in [*self.sessions, self.writer]:
            row = db.fetch_one(conn, "SELECT pg_backend_pid()")  # fails if the session was terminated
            out.append(int(row[0]) if row else -1)
        return out

    def wait_for(self, inserts: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.inserted < inserts:
            assert self._thread.is_alive() and time.monotonic() < deadline, "the writer stopped"
            time.sleep(0.01)

    def start(self) -> None:
        self._thread.start()
        self.wait_for(5)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        for conn in [*self.sessions, self.writer]:
            conn.close()


@contextlib.contextmanager
def template_copies(pg: db.PgServer, pairs: list[tuple[str, str]]) -> Iterator[dict[str, str]]:
    """Reference copies made the old way (CREATE DATABASE ... TEMPLATE), while the sources are idle."""
    made: dict[str, str] = {}
    try:
        with db.session(pg, "postgres", autocommit=True) as conn:
            for source, owner in pairs:
                made[source] = unique("apim_ref")
                db.execute(conn, queries.create_database_from_template(made[source], source, owner, None))
        yield made
    finally:
        with db.session(pg, "postgres", autocommit=True) as conn:
            for name in made.values():
                db.execute(conn, queries.drop_database(name))


def test_auto_copies_a_live_source_online_and_exactly(make_sandbox: Callable[..., Path], pg: db.PgServer) -> None:
    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    pairs = plan.databases.roles()
    apim = pairs["apim"]
    with template_copies(pg, [(p.source, p.owner) for p in pairs.values()]) as reference:
        production = Production(pg, [apim.source, plan.databases.shared.source], apim.source)
        try:
            before = production.pids()
            production.start()
            assert run_phase("prepare-databases", plan) == {
                "apim": "copied and verified",
                "shared": "copied and verified",
            }
            production.wait_for(production.inserted + 5)  # the source keeps moving after the copy
            after = production.pids()
        finally:
            production.close()
        assert after == before, "a production session was terminated"

        for role, pair in pairs.items():
            chosen = [r.details for r in _records(plan_path, "choose_copy_method") if r.details.get("role") == role]
            assert chosen[-1]["method"] == "snapshot", chosen
            assert "other session(s) are connected" in str(chosen[-1]["reason"])
            copied = [r for r in _records(plan_path, "copy_database") if r.details.get("target") == pair.target]
            assert copied[-1].outcome == "succeeded"
            assert copied[-1].details["method"] == "snapshot"
            assert "--snapshot=" in copied[-1].details["commands"][0]
            assert _marker_state(pg, pair.target) == "verified"

            # The gate's counts are those of the exported snapshot, and the copy holds exactly them.
            snap = Snapshot.load(plan.work_dir / "snapshots" / f"{role}-source.json")
            assert take_snapshot(pg, pair.target, pair.db_schema).row_counts == snap.row_counts, role

            # Owners, privileges, encoding and locale as the template copy gives them.
            assert _owners(pg, pair.target) == _owners(pg, reference[pair.source]), role

            # Every index of the template copy (the shared copy also has the two registry indexes).
            ref_indexes = set(_read(pg, reference[pair.source], INDEXES))
            copy_indexes = set(_read(pg, pair.target, INDEXES))
            assert ref_indexes <= copy_indexes and len(ref_indexes) > 10
            extra = {name for _, name, _ in copy_indexes - ref_indexes}
            assert extra == (set(queries.REGISTRY_INDEXES) if role == "shared" else set()), extra

        # The writer's table: the copy has the snapshot's rows, the source has more by now.
        snap = Snapshot.load(plan.work_dir / "snapshots" / "apim-source.json")
        now = take_snapshot(pg, apim.source).row_counts["am_subscriber"]
        in_ref = take_snapshot(pg, reference[apim.source]).row_counts["am_subscriber"]
        assert in_ref < snap.row_counts["am_subscriber"] < now

        # Sequences: those nobody advanced equal the source's; the writer's is ahead of every
        # key in the copy and no further than the source's (sequences are not transactional:
        # pg_dump reads their current value, at most what the source has now).
        ref_seq = dict(_read(pg, reference[apim.source], SEQUENCES))
        copy_seq = dict(_read(pg, apim.target, SEQUENCES))
        source_seq = dict(_read(pg, apim.source, SEQUENCES))
        moving = "am_subscriber_sequence"
        assert {k: v for k, v in copy_seq.items() if k != moving} == {k: v for k, v in ref_seq.items() if k != moving}
        max_key = _read(pg, apim.target, "SELECT max(subscriber_id) FROM am_subscriber")[0][0]
        assert max_key <= copy_seq[moving] <= source_seq[moving]
        shared = plan.databases.shared
        assert dict(_read(pg, shared.target, SEQUENCES)) == dict(_read(pg, reference[shared.source], SEQUENCES))

    assert not (plan.work_dir / "dumps" / "apim").exists(), "the dump is deleted after the restore"
    assert audit.verify_chain(plan.audit_path) == []


def test_template_method_with_sessions_fails_in_preflight(make_sandbox: Callable[..., Path], pg: db.PgServer) -> None:
    plan_path = make_sandbox()
    _set_method(plan_path, "template")
    plan = load_plan(plan_path)
    with db.connect(pg, plan.databases.apim.source, autocommit=True, application_name=CONTROL_PLANE) as conn:
        pid = db.fetch_one(conn, "SELECT pg_backend_pid()")
        with pytest.raises(PreflightError) as err:
            run_phase("prepare-databases", plan)
        assert db.fetch_one(conn, "SELECT pg_backend_pid()") == pid  # still connected
    message = str(err.value)
    assert f"1 other session(s) connected to '{plan.databases.apim.source}'" in message
    assert "CREATE DATABASE ... TEMPLATE needs none" in message and f"{CONTROL_PLANE} from 127.0.0.1" in message
    assert 'set method = "auto" under [copy]' in message
    with db.session(pg, "postgres", read_only=True) as conn:
        targets = [p.target for p in plan.databases.roles().values()]
        assert db.fetch_all(conn, queries.DATABASE_INFO, (targets,)) == []


def _kill_restore_of(target: str, stop: threading.Event, killed: list[int]) -> None:
    """Kill the process group of the pg_restore writing into ``target`` as soon as it runs."""
    needle = f"dbname={target}".encode()
    while not stop.is_set():
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"pg_restore") and any(needle in a for a in argv):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(int(entry.name)), signal.SIGKILL)
                    killed.append(int(entry.name))
                    return
        time.sleep(0.002)


def test_snapshot_copy_killed_mid_restore_is_rebuilt(make_sandbox: Callable[..., Path], pg: db.PgServer) -> None:
    plan_path = make_sandbox()
    _set_method(plan_path, "snapshot")
    plan = load_plan(plan_path)
    apim = plan.databases.apim
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_restore_of, args=(apim.target, stop, killed), daemon=True)
    killer.start()
    try:
        with pytest.raises(ApimUpgradeError) as err:
            run_phase("prepare-databases", plan)
    finally:
        stop.set()
        killer.join(10)
    assert killed, "pg_restore was never seen running"
    assert "pg_restore" in str(err.value) and "exited with code -9" in str(err.value)
    assert _marker_state(pg, apim.target) == "copying"  # half made, recognised as ours
    assert not (plan.work_dir / "dumps" / "apim").exists()

    assert run_phase("prepare-databases", plan) == {"apim": "copied and verified", "shared": "copied and verified"}
    rebuilt = [r for r in _records(plan_path, "copy_database") if r.outcome == "succeeded" and r.details.get("rebuilt")]
    assert [r.details["target"] for r in rebuilt] == [apim.target]
    assert rebuilt[0].details["method"] == "snapshot"
    for pair in plan.databases.roles().values():
        assert take_snapshot(pg, pair.target).row_counts == take_snapshot(pg, pair.source).row_counts
        assert _marker_state(pg, pair.target) == "verified"
    assert audit.verify_chain(plan.audit_path) == []
