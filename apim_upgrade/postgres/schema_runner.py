"""Applies vendor SQL scripts the way Flyway would: atomically, in order, once, recorded.

* One transaction per script: on any error the database is exactly as before,
  and the error names script, statement number, its line, SQLSTATE, message,
  detail and hint.
* ``apim_upgrade.schema_history`` (inside the target, written in the same
  transaction) records each script's SHA-256, order, duration and statement
  count. A rerun skips applied scripts; a changed file is drift and is refused
  unless the operator re-baselines it explicitly.
* A session-level advisory lock keyed on the target database keeps two runs
  apart; the second fails fast and says who holds the lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from apim_upgrade.errors import ApimUpgradeError, DatabaseUnavailable
from apim_upgrade.postgres import bookkeeping, db, queries
from apim_upgrade.postgres.bookkeeping import AppliedScript
from apim_upgrade.postgres.sqlscript import Script, ScriptError, Statement
from apim_upgrade.runtime.identity import default_actor

# Prefix of the application_name of the session applying a script (seen in pg_stat_activity).
SCRIPT_APPLICATION_NAME = "apim-upgrade script"


class ScriptFailed(ApimUpgradeError):
    """A statement failed; the script was rolled back as a whole."""

    exit_code = 8


class ScriptDrift(ApimUpgradeError):
    """A recorded script's file changed since it was applied."""

    exit_code = 8


class UpgradeLocked(ApimUpgradeError):
    """Another run holds the upgrade lock on this database."""

    exit_code = 9


@dataclass
class ScriptEffects:
    """What a script's own transaction did to row counts, read inside it just before COMMIT.

    ``pg_stat_xact_user_tables`` holds this transaction's own inserts and deletes per table
    (exact: its pending counters, no flush delay); a changed relfilenode is a TRUNCATE or a
    rewrite. The tables named here are counted by the script's gate whatever the cumulative
    counters say; every other table is proven unchanged by them (``catalog.plan_counts``).
    """

    touched: dict[str, list[int]] = field(default_factory=dict)  # table -> [inserted, deleted]
    rewritten: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    named: list[str] = field(default_factory=list)  # INSERT/DELETE/TRUNCATE targets of the script
    count_all: str = ""  # why every table must be counted ("" = it need not)

    def must_count(self, tables: list[str]) -> set[str]:
        if self.count_all:
            return set(tables)
        return set(self.touched) | set(self.rewritten) | set(self.created) | set(self.named)

    def record(self) -> dict[str, object]:
        return {
            "touched": self.touched,
            "rewritten": self.rewritten,
            "created": self.created,
            "named": self.named,
            "count_all": self.count_all,
        }

    @classmethod
    def from_record(cls, data: dict[str, object]) -> ScriptEffects:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})  # type: ignore[arg-type]


def _filenodes(conn: db.AnyConnection, schema: str, query: str) -> dict[str, tuple[int | None, int, int]]:
    return {str(t): (f, int(i), int(d)) for t, f, i, d in db.fetch_all(conn, query, (schema,))}


def _effects(
    conn: db.AnyConnection, schema: str, script: Script, start: dict[str, tuple[int | None, int, int]]
) -> ScriptEffects:
    now = _filenodes(conn, schema, queries.XACT_TABLE_FACTS)
    out = ScriptEffects(named=sorted(script.count_targets()))
    for table, (filenode, ins, dels) in now.items():
        if table not in start:
            out.created.append(table)
        elif filenode is None or filenode != start[table][0]:
            out.rewritten.append(table)
        if ins or dels:
            out.touched[table] = [ins, dels]
    if any("track_counts" in st.text.lower() for st in script.statements):
        out.count_all = "the script mentions track_counts: its counters cannot be trusted"
    return out


@dataclass(frozen=True)
class ScriptStatus:
    script: Script
    state: str  # pending | applied | drift
    recorded: AppliedScript | None


def read_history(conn: db.Connection) -> list[AppliedScript]:
    """The scripts recorded as applied, in order (none on a database without bookkeeping)."""
    return bookkeeping.applied_scripts(conn)


def check_order(scripts: list[Script], start_version: str) -> None:
    """Scripts must chain: start_version -> ... with no gap or repeat."""
    expected = start_version
    for script in scripts:
        if script.from_version != expected:
            raise ScriptError(
                f"schema_upgrade.scripts: {script.name} upgrades from {script.from_version}, but the "
                f"previous step ends at {expected}; list the scripts in upgrade order without gaps"
            )
        expected = script.to_version


def plan_scripts(scripts: list[Script], history: list[AppliedScript]) -> list[ScriptStatus]:
    """Status of each script against the history; refuses out-of-order history."""
    recorded = {(h.from_version, h.to_version): h for h in history}
    out = []
    seen_pending = False
    for script in scripts:
        rec = recorded.get((script.from_version, script.to_version))
        if rec is None:
            seen_pending = True
            out.append(ScriptStatus(script, "pending", None))
            continue
        if seen_pending:
            raise ApimUpgradeError(
                f"{script.name} ({script.from_version}->{script.to_version}) is recorded as applied but an "
                "earlier script is not: the history is out of order; inspect apim_upgrade.schema_history"
            )
        out.append(ScriptStatus(script, "applied" if rec.sha256 == script.sha256 else "drift", rec))
    return out


@contextmanager
def upgrade_lock(
    server: db.PgServer, dbname: str, holder_name: str, *, recorder: db.Recorder | None = None
) -> Iterator[SessionLock]:
    """Hold the per-database advisory lock for the duration of the block (fails fast)."""
    with advisory_lock(server, dbname, dbname, holder_name, f"upgrading '{dbname}'", recorder=recorder) as lock:
        yield lock


class SessionLock:
    """A session-level advisory lock on ``key``, held on its own connection to ``connect_db``.

    The holder's application_name is ``holder_name`` so whoever is refused learns who holds
    the lock. A server restart ends the session and with it the lock: :meth:`ensure` takes it
    again (failing fast if another run got it in between). With a ``recorder`` (dry run) the
    lock's statements are recorded, not sent.
    """

    def __init__(
        self,
        server: db.PgServer,
        connect_db: str,
        key: str,
        holder_name: str,
        activity: str,
        recorder: db.Recorder | None = None,
    ) -> None:
        self.server, self.connect_db, self.key = server, connect_db, key
        self.holder_name, self.activity = holder_name[:63], activity
        self.recorder = recorder
        self.conn: db.AnyConnection | None = None

    def acquire(self) -> None:
        conn: db.AnyConnection
        if self.recorder is not None:
            conn = self.recorder.connect(self.connect_db, autocommit=True, application_name=self.holder_name)
        else:
            conn = db.connect(self.server, self.connect_db, autocommit=True, application_name=self.holder_name)
        try:
            if not db.try_lock(conn, queries.TRY_ADVISORY_LOCK, (queries.ADVISORY_NAMESPACE, self.key)):
                holders = db.fetch_all(conn, queries.ADVISORY_HOLDER, (queries.ADVISORY_NAMESPACE, self.key))
                who = (
                    "; ".join(
                        f"pid {pid} '{app}' from {addr} as {user} since {since:%Y-%m-%d %H:%M:%S}"
                        for pid, app, addr, user, since in holders
                    )
                    or "an unknown session"
                )
                raise UpgradeLocked(
                    f"another run is {self.activity} right now ({who}); wait for it to finish, or stop it "
                    "if it is stale (pg_terminate_backend(pid))"
                )
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def ensure(self) -> bool:
        """Take the lock again if its session was lost; True when it had to."""
        if self.conn is not None and not db.is_broken(self.conn):
            try:
                db.fetch_one(self.conn, queries.PING)
                return False
            except db.OperationalError as exc:
                if not db.connection_lost(exc):
                    raise
        self.release()
        self.acquire()
        return True

    def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if not db.is_broken(conn):
                db.execute(conn, queries.ADVISORY_UNLOCK, (queries.ADVISORY_NAMESPACE, self.key))
        except db.OperationalError as exc:
            if not db.connection_lost(exc):
                raise
            # The session is gone, and the server released its locks with it.
        finally:
            conn.close()


@contextmanager
def advisory_lock(
    server: db.PgServer,
    connect_db: str,
    key: str,
    holder_name: str,
    activity: str,
    *,
    recorder: db.Recorder | None = None,
) -> Iterator[SessionLock]:
    """A session-level advisory lock on ``key`` for the duration of the block; fails fast."""
    lock = SessionLock(server, connect_db, key, holder_name, activity, recorder)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def apply_script(
    server: db.PgServer,
    dbname: str,
    script: Script,
    rank: int,
    *,
    flow_run_id: str | None = None,
    on_statement: Callable[[Statement], None] | None = None,
    run_as: str | None = None,
    recorder: db.Recorder | None = None,
    schema: str = "public",
    effects_step: tuple[str, str] | None = None,
) -> AppliedScript:
    """Run every statement of ``script`` and record it, all in one transaction.

    ``run_as``: the database owner; the script runs as that role (SET LOCAL ROLE) so the
    objects it creates belong to WSO2's user like the rest of the schema. ``recorder``: the
    dry run; every statement of this very code is recorded instead of sent.

    ``effects_step`` (phase, step): where, in the same transaction, the script's
    :class:`ScriptEffects` on ``schema`` are recorded (completed_steps evidence) for its gate.
    Before COMMIT the session asks for its counters to be flushed at commit, so the cumulative
    counters the gate reads next include the script. A dry run skips these reads.
    """
    started = time.monotonic()
    app = f"{SCRIPT_APPLICATION_NAME} {script.from_version}->{script.to_version}"
    opened: AbstractContextManager[db.AnyConnection] = (
        recorder.session(dbname, application_name=app)
        if recorder is not None
        else db.session(server, dbname, activity=f"applying {script.name}", application_name=app)
    )
    with opened as conn:
        current: Statement | None = None
        stage = "preparing its transaction"  # where it stopped, when no statement of the script is running
        try:
            bookkeeping.ensure(conn)
            if not db.try_lock(conn, queries.TRY_ADVISORY_XACT_LOCK, (queries.ADVISORY_NAMESPACE, f"apply:{dbname}")):
                raise UpgradeLocked(
                    f"another session is applying a script to '{dbname}' right now; wait for it to finish, then rerun"
                )
            done = db.fetch_one(conn, queries.select_schema_history_step(), (script.from_version, script.to_version))
            if done is not None:
                # An earlier attempt lost its connection while committing, and the commit took effect.
                return AppliedScript(*done)
            start = (
                _filenodes(conn, schema, queries.TABLE_FACTS) if effects_step is not None and recorder is None else {}
            )
            if run_as is not None:
                db.execute(conn, queries.set_local_role(run_as))
            for statement in script.statements:
                current = statement
                if on_statement is not None:
                    on_statement(statement)
                db.execute_script(conn, statement.text)
            current, stage = None, "recording its history row"
            if run_as is not None:
                db.execute(conn, "RESET ROLE")  # the history table belongs to this tool, not to WSO2's user
            if effects_step is not None and recorder is None:
                stage = "reading what it changed"
                effects = _effects(conn, schema, script, start)
                db.execute(
                    conn,
                    queries.upsert_completed_step(),
                    (*effects_step, flow_run_id, json.dumps(effects.record())),
                )
                db.fetch_one(conn, queries.FORCE_STATS_FLUSH)
            duration = int((time.monotonic() - started) * 1000)
            db.execute(
                conn,
                queries.insert_schema_history(),
                (
                    rank,
                    script.from_version,
                    script.to_version,
                    script.name,
                    script.sha256,
                    len(script.statements),
                    duration,
                    default_actor(),
                    flow_run_id,
                ),
            )
            stage = "committing it"
            conn.commit()
        except db.PgError as exc:
            where = (
                f"statement {current.number} of {len(script.statements)} (line {current.line}: {current.first_line!r})"
                if current
                else stage
            )
            if db.connection_lost(exc):
                raise _connection_lost(server, dbname, script, where, stage == "committing it", exc) from None
            conn.rollback()
            raise ScriptFailed(
                f"{script.path} failed at {where}: {db.describe_pg_error(exc)}. The whole script was rolled "
                "back: the database is exactly as before it. Fix the cause and rerun."
            ) from None
    return AppliedScript(
        rank, script.from_version, script.to_version, script.name, script.sha256, len(script.statements), duration
    )


def _connection_lost(
    server: db.PgServer, dbname: str, script: Script, where: str, committing: bool, exc: db.PgError
) -> DatabaseUnavailable:
    """Lost mid-script: say that nothing of it was committed (or, at COMMIT, that it is all or nothing)."""
    if committing:
        consequence = (
            "the script is either fully applied and recorded in apim_upgrade.schema_history or not applied "
            "at all. Rerun when the server is back: a recorded script is skipped, an unrecorded one runs again"
        )
    else:
        consequence = (
            "nothing of the script was committed (the server rolled its transaction back), so the database "
            "is exactly as before it. Rerun when the server is back: the script runs again from its first statement"
        )
    return db.lost_connection_error(server, dbname, f"applying {script.path} at {where}", exc, consequence=consequence)


def rebaseline(server: db.PgServer, dbname: str, script: Script) -> None:
    """Accept the changed file of an applied script as the recorded one (explicit operator act)."""
    with db.session(server, dbname) as conn:
        db.execute(
            conn,
            queries.rebaseline_schema_history(),
            (script.sha256, script.name, script.from_version, script.to_version),
        )


def dry_run(
    server: db.PgServer, dbname: str, statuses: list[ScriptStatus], *, holder_name: str, run_as: str | None
) -> list[str]:
    """What a run would send for ``statuses``, statement by statement; sends nothing.

    The run's own code (the upgrade lock, then :func:`apply_script` per pending script) runs
    against a recorder, so the role switches, the locks and the history row are all there.
    """
    with db.recording(server, dbname) as recorder:
        with upgrade_lock(server, dbname, holder_name, recorder=recorder):
            for rank, status in enumerate(statuses, start=1):
                s = status.script
                if status.state == "applied":
                    recorder.note(f"{s.name} ({s.from_version} -> {s.to_version}): already applied, skipped")
                    continue
                if status.state == "drift":
                    recorded = status.recorded.sha256 if status.recorded else "?"
                    recorder.note(
                        f"{s.name}: DRIFT (recorded sha256 {recorded}, file {s.sha256}): refused unless re-baselined"
                    )
                    continue
                recorder.note(
                    f"{s.name} ({s.from_version} -> {s.to_version}), sha256 {s.sha256}, {len(s.statements)} statements"
                )
                for line, text in s.skipped:
                    recorder.note(
                        f"line {line}: skipped transaction control {text!r} (the runner's transaction replaces it)"
                    )
                apply_script(
                    server,
                    dbname,
                    s,
                    rank,
                    run_as=run_as,
                    recorder=recorder,
                    on_statement=lambda st: recorder.note(f"statement {st.number}, line {st.line}"),
                )
        return recorder.lines


def statuses_for(server: db.PgServer, dbname: str, scripts: list[Script]) -> list[ScriptStatus]:
    with db.session(server, dbname, read_only=True) as conn:
        return plan_scripts(scripts, read_history(conn))
