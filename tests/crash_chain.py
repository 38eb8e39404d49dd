"""Crash chains: start a real rehearsal process, SIGKILL it at a verified point, start it again.

Used by tests/test_rehearsal_proof.py. Every phase is hit, at step boundaries (a failpoint:
the process announces itself in a file and waits for the kill) and in the middle of work the
chain watches from outside: a ``CREATE DATABASE ... TEMPLATE`` running (blocked behind a lock
the test holds on the source, seen in pg_stat_activity), a vendor script inside its
transaction after some of its statements, and stand-in servers migrating (blocked behind a
table lock, seen in pg_stat_activity and their console log).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from apim_upgrade.phases import NAMES as ALL_PHASES
from apim_upgrade.plan import Plan, load_plan
from apim_upgrade.postgres import db
from apim_upgrade.proof import audit
from apim_upgrade.rehearsal import derive_rehearsal_plan
from sandbox.demo import accept_invalid_apis
from sandbox.nodes import standin_processes
from tests.failpoints import FILE_VARIABLE, POINT_VARIABLE, child_env

ROOT = Path(__file__).resolve().parents[1]
WAIT = 240.0  # seconds any single point may take to be reached (a loaded CI machine)
IDENTITY_PREFIXES = ("idn_", "sp_", "cm_", "idp_", "fido", "wf_")


def rehearse(plan_path: Path, env: dict[str, str], out: Path, err: Path) -> subprocess.Popen[bytes]:
    """``apim-upgrade rehearse PLAN --keep-copies`` as an operator starts it, in its own session."""
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "rehearse", str(plan_path), "--keep-copies"],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # the test kills exactly this process, nothing else
        )


@dataclass
class Chain:
    """Starts, kills and reruns the rehearsal of one estate; remembers every point it hit."""

    plan_path: Path
    env: dict[str, str]
    server: db.PgServer
    out_dir: Path
    plan: Plan = field(init=False)  # the rehearsal's own plan (copies, work dir), as the CLI derives it
    hits: list[dict[str, Any]] = field(default_factory=list)
    live: list[subprocess.Popen[bytes]] = field(default_factory=list)
    timeline: list[list[Any]] = field(default_factory=list)  # [label, seconds] per run
    runs: int = 0
    closed: bool = False
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        # Derived once, before any run: the CLI rewrites that file at each start.
        self.plan = load_plan(derive_rehearsal_plan(load_plan(self.plan_path)))

    def start(self, label: str, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if self.closed:
            pytest.fail("the test is ending: no more runs")
        self.runs += 1
        stem = self.out_dir / f"{self.runs:02d}-{re.sub(r'[^a-z0-9]+', '-', label.lower())}"
        env = child_env({**self.env, **(extra or {})})
        proc = rehearse(self.plan_path, env, Path(f"{stem}.out"), Path(f"{stem}.err"))
        self.live.append(proc)
        self.timeline.append([label, time.monotonic()])
        return proc

    def ended(self) -> None:
        self.timeline[-1][1] = round(time.monotonic() - self.timeline[-1][1], 1)

    def close(self) -> None:
        """Kill whatever run a failed assertion left behind; start no other."""
        self.closed = True
        for proc in self.live:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)

    def wait_until(self, proc: subprocess.Popen[bytes], check: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            if proc.poll() is not None:
                pytest.fail(f"run {self.runs} ended (code {proc.returncode}) before {what}:\n{self.tail()}")
            time.sleep(0.05)
        proc.kill()
        pytest.fail(f"run {self.runs}: {what} not reached within {WAIT:.0f} s:\n{self.tail()}")

    def kill(self, proc: subprocess.Popen[bytes], point: str, phase: str, evidence: str) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        self.ended()
        assert proc.returncode == -signal.SIGKILL
        self.hits.append(
            {"run": self.runs, "point": point, "phase": phase, "evidence": evidence, "at_s": self.elapsed()}
        )

    def kill_at(self, point: str) -> None:
        """Run until the failpoint ``point`` announces itself, then SIGKILL the process."""
        announce = self.out_dir / f"failpoint-{self.runs + 1:02d}.json"
        proc = self.start(point, {POINT_VARIABLE: point, FILE_VARIABLE: str(announce)})
        said = self.wait_until(proc, lambda: announce.exists() and json.loads(announce.read_text()), point)
        assert said == {"point": point, "pid": proc.pid}, said  # this very process waits at this point
        phase = point.split(":", 1)[1].split("/", 1)[0]
        self.kill(proc, point, phase, f"failpoint file {announce.name}")

    def run(self, label: str, expect: int = 0, extra: dict[str, str] | None = None) -> str:
        proc = self.start(label, extra)
        try:
            proc.wait(WAIT * 2)
        finally:
            if proc.poll() is None:
                proc.kill()
        self.ended()
        assert proc.returncode == expect, f"run {self.runs} ({label}): code {proc.returncode}:\n{self.tail()}"
        return self.tail()

    def tail(self) -> str:
        stem = sorted(self.out_dir.glob(f"{self.runs:02d}-*.err"))
        text = "".join(p.read_text(errors="replace") for p in stem)
        out = "".join(p.with_suffix(".out").read_text(errors="replace") for p in stem)
        return (out + text)[-3000:]

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)

    # --- watching the database from outside ---------------------------------------------

    def activity(self, where: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with db.session(self.server, "postgres", read_only=True, autocommit=True) as conn:
            return db.fetch_all(
                conn,
                "SELECT pid, datname, application_name, state, wait_event_type, query, "
                "xact_start < query_start FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND " + where,
                params,
            )

    def wait_for_quiet(self) -> None:
        """Until the killed run's sessions are gone (a blocked backend finishes its statement first)."""
        copies = [p.target for p in self.plan.databases.roles().values()]
        where = "backend_type = 'client backend' AND (datname = ANY(%s) OR query LIKE %s OR application_name LIKE %s)"
        params = (copies, f"%{copies[0]}%", f"%{load_plan(self.plan_path).name}%")
        deadline = time.monotonic() + WAIT
        while lingering := self.activity(where, params):
            assert time.monotonic() < deadline, f"sessions of the killed run linger: {lingering}"
            time.sleep(0.1)

    def kill_when(
        self,
        label: str,
        phase: str,
        where: str,
        params: tuple[Any, ...],
        *,
        log_line: str = "",
        mid_transaction: bool = False,
        with_watcher: bool = False,
    ) -> list[int]:
        """Run until a session matching ``where`` waits on a lock (and the JVM log says ``log_line``); kill.

        ``mid_transaction``: the waiting statement must not be the first of its transaction.
        ``with_watcher``: SIGKILL the stand-in server's lifeline watcher too, first (as if the
        whole supervision were lost), so that the server outlives the run. Returns the
        stand-in servers running at the kill.
        """

        def reached() -> str:
            rows = self.activity(f"wait_event_type = 'Lock' AND ({where})", params)
            if not rows or (log_line and not self.jvm_log_says(phase, log_line)):
                return ""
            _, dbname, app, _, _, query, earlier = rows[0]
            assert earlier or not mid_transaction, f"{label}: the waiting statement opened its transaction: {query}"
            return f"pg_stat_activity: {app!r} on {dbname} waits on a lock in `{' '.join(query.split())[:90]}`"

        proc = self.start(label)
        evidence = self.wait_until(proc, reached, label)
        servers = standin_processes(self.plan.work_dir)
        if with_watcher:
            for pid in servers:
                watcher = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
                assert "lifeline.py" in (Path("/proc") / str(watcher) / "cmdline").read_text(errors="replace")
                os.kill(watcher, signal.SIGKILL)
        self.kill(proc, label, phase, evidence + (f"; console: {log_line!r}" if log_line else ""))
        return servers

    def jvm_log_says(self, phase: str, text: str) -> bool:
        logs = sorted((self.plan.work_dir / "logs").glob(f"{phase}-*.log"))
        return bool(logs) and text in logs[-1].read_text(errors="replace")

    def servers_left(self, timeout: float) -> list[int]:
        """Stand-in servers of this estate's migration environment still alive after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := standin_processes(self.plan.work_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left


@contextmanager
def held(server: db.PgServer, dbname: str, statement: sql.Composed) -> Iterator[None]:
    """``statement`` run in a transaction that stays open (its locks held) for the block."""
    conn = db.connect(server, dbname)
    try:
        db.execute(conn, statement)
        yield
    finally:
        conn.rollback()
        conn.close()


def lock_tables(tables: list[str], mode: str) -> sql.Composed:
    return sql.SQL("LOCK TABLE {} IN " + mode + " MODE").format(sql.SQL(", ").join(map(sql.Identifier, tables)))


def tables_of(server: db.PgServer, dbname: str, prefixes: tuple[str, ...]) -> list[str]:
    with db.session(server, dbname, read_only=True) as conn:
        names = [str(t) for (t,) in db.fetch_all(conn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    return sorted(n for n in names if n.lower().startswith(prefixes))


def later_table(script: Path) -> tuple[str, int]:
    """A table the script alters only after some other statement (and the statement's number)."""
    altered = re.findall(r'^ALTER TABLE "public"\."(\w+)"', script.read_text(), flags=re.M)
    firsts = {t: altered.index(t) for t in altered}
    table = max(firsts, key=firsts.__getitem__)
    assert firsts[table] > 0, f"{script}: every statement alters the same table"
    return table, firsts[table] + 1


# Every phase a rehearsal runs, in order: it skips the cutover-only window (whose resume and
# rollback points tests/test_window.py covers).
PHASES = tuple(p for p in ALL_PHASES if p != "window")


def crash_early_phases(chain: Chain, server: db.PgServer) -> None:
    """prepare-databases to cleanup: every kill at a verified point, in the order a run reaches them."""
    plan = chain.plan
    apim, shared = plan.databases.apim.target, plan.databases.shared.target
    source = load_plan(chain.plan_path).databases.apim.source

    # prepare-databases: mid-copy. CREATE DATABASE ... TEMPLATE needs a share lock on the source
    # database object; COMMENT ON DATABASE in an open transaction holds a conflicting one.
    comment = sql.SQL("COMMENT ON DATABASE {} IS 'held by the crash test'").format(sql.Identifier(source))
    with held(server, "postgres", comment):
        chain.kill_when(
            "mid-copy:apim",
            "prepare-databases",
            "query ILIKE 'CREATE DATABASE%%' AND query LIKE %s",
            (f"%{apim}%",),
        )
    chain.wait_for_quiet()  # the orphaned CREATE DATABASE completes: a copy without its marker
    chain.kill_at("after:prepare-databases/copy_database")  # rebuilt, marked 'copying', not gated
    chain.kill_at("after:prepare-databases/validate_copy")  # API-M copy verified, shared not made
    chain.kill_at("after:prepare-databases/create_registry_indexes")  # shared copied, not gated
    chain.kill_at("after:migration-environment/render_deployment_toml")

    # identity-migration: mid-JVM-run, the server's schema transaction waits on an identity table.
    with held(server, apim, lock_tables(tables_of(server, apim, IDENTITY_PREFIXES), "ACCESS SHARE")):
        chain.kill_when("mid-jvm:identity", "identity-migration", "datname = %s", (apim,), log_line="Start Version : ")
        assert chain.servers_left(30) == [], "the identity migration server outlived the killed flow"
    chain.wait_for_quiet()
    chain.kill_at("after:identity-migration/run_api_manager")  # migrated, not gated, not marked done

    # api-pre-migration stops on the sandbox's broken APIs; the operator accepts them and reruns.
    assert "API(s) have definitions that will break" in chain.run("findings gate", expect=7)
    accept_invalid_apis(chain.plan_path)
    chain.kill_at("after:api-pre-migration/report_findings")

    # A failing JVM run (the stand-in dies half-way through its schema changes): nothing stays up.
    failing = {"APIM_STANDIN_FAIL": "mid-migration", "APIM_STANDIN_FAIL_STEP": "api"}
    assert "FAILED: api-migration" in chain.run("stand-in fails mid-migration", expect=6, extra=failing)
    assert standin_processes(chain.plan_path.parent) == [], "a failed JVM run left its server running"

    # api-migration: mid-JVM-run, AM_DB already migrated, the re-indexing clean-up of REG_LOG waits.
    # Its watcher is killed as well, so the server survives; the next run must stop it first.
    with held(server, shared, lock_tables(["reg_log"], "SHARE")):
        orphans = chain.kill_when(
            "mid-jvm:api",
            "api-migration",
            "datname = %s",
            (shared,),
            log_line="Artifact re-indexing migrator started",
            mid_transaction=True,
            with_watcher=True,
        )
        assert len(orphans) == 1 and chain.servers_left(1) == orphans
    chain.wait_for_quiet()  # the orphan finishes its migration and stays up, like a JVM would
    assert chain.servers_left(0) == orphans
    chain.kill_at("after:api-migration/validate_migration")  # gated, not marked done
    # The rerun stopped it before replacing its home, and said so in the audit trail.
    stopped = [
        s for r in audit.read_records(chain.plan.audit_path) for s in r.details.get("stopped_leftover_servers", [])
    ]
    assert [s["pid"] for s in stopped] == orphans
    assert standin_processes(chain.plan_path.parent) == []
    chain.kill_at("after:cleanup/discard_migration_home")  # home gone, not marked done
    chain.run("to the end")


def crash_late_phases(chain: Chain, server: db.PgServer) -> None:
    """schema-upgrade to cutover, on an estate whose first run went uninterrupted up to there."""
    plan = chain.plan
    apim = plan.databases.apim.target
    chain.kill_at("before:schema-upgrade/check_script_history")

    # schema-upgrade: both vendor scripts killed inside their transaction, after some statements.
    assert plan.schema_upgrade is not None
    for number, script in enumerate(plan.schema_upgrade.scripts, start=1):
        table, statement = later_table(script.path)
        with held(server, apim, lock_tables([table], "ACCESS SHARE")):
            chain.kill_when(
                f"mid-script:{number}:statement-{statement}",
                "schema-upgrade",
                "datname = %s AND application_name LIKE 'apim-upgrade script%%' AND query LIKE %s",
                (apim, f"%{table}%"),
                mid_transaction=True,
            )
        chain.wait_for_quiet()
        if number == 1:
            chain.kill_at("after:schema-upgrade/apply_sql_script")  # committed, gate not run
            chain.kill_at("after:schema-upgrade/validate_script")
    chain.kill_at("before:schema-upgrade/check_conformance")
    chain.kill_at("after:configure-440/carry_over_customisations")

    # cutover on the rehearsal nodes: between stopping 4.0.0 and starting 4.4.0, after 4.4.0 is up
    # (on the same ports), and with everything done but the record of it.
    chain.kill_at("after:cutover/stop_control_plane_400")
    chain.kill_at("after:cutover/start_control_plane_440")
    chain.kill_at("before:cutover/mark_phase_done")
    chain.run("to the end")
