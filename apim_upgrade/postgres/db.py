"""The only module that talks to the PostgreSQL driver.

Connections are opened here and nowhere else. Source databases are opened
with ``default_transaction_read_only=on`` so that the server itself refuses
any write, whatever a caller does by mistake.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors, sql

from apim_upgrade.errors import DatabaseError, DatabaseUnavailable, LoginRefused
from apim_upgrade.postgres.address import APPLICATION_NAME, PgServer

__all__ = ["APPLICATION_NAME", "Connection", "PgServer", "Query"]

Query = str | sql.SQL | sql.Composed
Params = Sequence[Any] | dict[str, Any] | None
Connection = psycopg.Connection[Any]


def connect(
    server: PgServer,
    dbname: str,
    *,
    read_only: bool = False,
    autocommit: bool = False,
    application_name: str | None = None,
) -> psycopg.Connection[tuple[Any, ...]]:
    """Open a connection; ``read_only`` makes the server refuse every write.

    ``application_name`` labels the session in pg_stat_activity (an operator looking at a
    blocked or long statement sees which step of apim-upgrade it is).
    """
    extra: dict[str, Any] = {}
    if read_only:
        extra["options"] = "-c default_transaction_read_only=on"
    if application_name:
        extra["application_name"] = application_name[:63]  # longer names are truncated by the server
    try:
        return psycopg.connect(server.conninfo(dbname, **extra), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        text = str(exc)
        # A missing database or a refused login does not heal by retrying. libpq reports a failed
        # connection without a SQLSTATE (psycopg raises plain OperationalError), so its text is
        # the only signal here; errors on an open session are classified by class instead.
        permanent = "does not exist" in text or "authentication" in text or "password" in text
        raise (LoginRefused if permanent else DatabaseUnavailable)(
            f"cannot connect to database '{dbname}' at {server.describe()}: "
            f"{_first_line(exc)}. Check the [postgres] section of the plan, that the server "
            "is running and that the password variable is set."
        ) from None


# A session that ends with one of these never reached the server's commit: the server
# rolled its open transaction back. psycopg maps each SQLSTATE to its own class: class 08
# (connection exception) and 57P01-57P03 (admin/crash shutdown, cannot connect now). Other
# OperationalErrors (lock timeout, query cancelled, out of resources) are not a lost connection.
_LOST = (
    errors.ConnectionException,
    errors.ConnectionDoesNotExist,
    errors.ConnectionFailure,
    errors.SqlclientUnableToEstablishSqlconnection,
    errors.SqlserverRejectedEstablishmentOfSqlconnection,
    errors.TransactionResolutionUnknown,
    errors.ProtocolViolation,
    errors.AdminShutdown,
    errors.CrashShutdown,
    errors.CannotConnectNow,
)
# The source has other sessions: CREATE DATABASE ... TEMPLATE refuses to copy it.
ObjectInUse = errors.ObjectInUse


def connection_lost(exc: BaseException) -> bool:
    """True when ``exc`` means the connection to the server is gone (transient: rerun heals it)."""
    if isinstance(exc, _LOST):
        return True
    # libpq-level failures carry no SQLSTATE ("server closed the connection unexpectedly").
    return isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None


def lost_connection_error(
    server: PgServer,
    dbname: str,
    activity: str,
    exc: BaseException,
    *,
    committing: bool = False,
    consequence: str | None = None,
) -> DatabaseUnavailable:
    """The one message for a lost connection: where, doing what, what it means, what to do."""
    if consequence is None:
        consequence = (
            "the connection went while committing, so that transaction either took effect completely or "
            "not at all. Check that the server is up and rerun the same command: it resumes where it stopped"
            if committing
            else "the server rolled back the open transaction, so nothing uncommitted was kept. Check that "
            "the server is up and rerun the same command: it resumes where it stopped"
        )
    return DatabaseUnavailable(
        f"lost the connection to {server.describe()}/{dbname} while {activity} ({_first_line(exc)}); {consequence}"
    )


@contextmanager
def session(
    server: PgServer,
    dbname: str,
    *,
    read_only: bool = False,
    autocommit: bool = False,
    activity: str = "running a query",
    application_name: str | None = None,
) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A connection that is always closed; commits on success unless autocommit.

    A lost connection (server restart, terminated backend, network) surfaces as
    :class:`DatabaseUnavailable` naming server, database and ``activity``, which tasks retry.
    """
    conn = connect(server, dbname, read_only=read_only, autocommit=autocommit, application_name=application_name)
    try:
        try:
            yield conn
        except psycopg.OperationalError as exc:
            if connection_lost(exc):
                raise lost_connection_error(server, dbname, activity, exc) from None
            _rollback_quietly(conn)
            raise
        except BaseException:
            _rollback_quietly(conn)
            raise
        if not autocommit:
            try:
                conn.commit()
            except psycopg.OperationalError as exc:
                if connection_lost(exc):
                    raise lost_connection_error(server, dbname, activity, exc, committing=True) from None
                raise
    finally:
        conn.close()


@contextmanager
def failure_named(doing: str, advice: str) -> Iterator[None]:
    """A failing statement becomes one DatabaseError: what failed, the server's words, what to do.

    ``advice`` starts with its own separator ("; is ..." or ". Check ..."). A lost connection
    passes through untouched: :func:`session` names it and tasks retry it.
    """
    try:
        yield
    except psycopg.Error as exc:
        if connection_lost(exc):
            raise
        raise DatabaseError(f"{doing} failed: {describe_pg_error(exc)}{advice}") from None


def _rollback_quietly(conn: psycopg.Connection[Any]) -> None:
    """Roll back without hiding the error that is already on its way up."""
    if conn.closed or conn.broken:
        return
    try:
        conn.rollback()
    except psycopg.Error:
        pass  # the original error says more; the server rolls back when the session closes


@contextmanager
def snapshot_transaction(
    server: PgServer,
    dbname: str,
    *,
    activity: str = "reading a consistent snapshot",
    application_name: str | None = None,
) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """One REPEATABLE READ, READ ONLY transaction: every read sees the same snapshot."""
    conn = connect(server, dbname, read_only=True, application_name=application_name)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            yield conn
    except psycopg.OperationalError as exc:
        if connection_lost(exc):
            raise lost_connection_error(server, dbname, activity, exc) from None
        raise
    finally:
        conn.close()


def is_broken(conn: AnyConnection) -> bool:
    """The session is gone (closed, or the server ended it)."""
    return bool(conn.closed or conn.broken)


def fetch_all(conn: AnyConnection, query: Query, params: Params = None) -> list[tuple[Any, ...]]:
    if isinstance(conn, RecordingConnection):
        conn.send(query, params)
        return []  # a dry run has none of the rows its writes would leave
    with conn.cursor() as cur:
        cur.execute(query, params)
        return list(cur.fetchall()) if cur.description else []


def fetch_one(conn: AnyConnection, query: Query, params: Params = None) -> tuple[Any, ...] | None:
    if isinstance(conn, RecordingConnection):
        conn.send(query, params)
        return None
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone() if cur.description else None


def probe(conn: AnyConnection, query: Query, params: Params = None) -> tuple[Any, ...] | None:
    """A read of the database as it is now, whose answer decides what is sent next.

    A recording connection records it and answers it from the real database (read-only), so a
    dry run takes the branch a run would take. Only for reads that exist before the run writes.
    """
    if isinstance(conn, RecordingConnection):
        conn.send(query, params)
        return fetch_one(conn.recorder.reader, query, params)
    return fetch_one(conn, query, params)


def try_lock(conn: AnyConnection, query: Query, params: Params = None) -> bool:
    """Run a ``pg_try_advisory_*lock`` query: True when granted (a dry run shows the granted path)."""
    if isinstance(conn, RecordingConnection):
        conn.send(query, params)
        return True
    row = fetch_one(conn, query, params)
    return bool(row and row[0])


def execute(conn: AnyConnection, query: Query, params: Params = None) -> int:
    """Run one statement (or a parameterless script); returns the row count."""
    if isinstance(conn, RecordingConnection):
        conn.send(query, params)
        return 0
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.rowcount


def execute_script(conn: AnyConnection, script: str | sql.Composable) -> None:
    """Run a multi-statement SQL text (no parameters) in the simple query protocol."""
    text = script if isinstance(script, str) else render(conn, script)
    if isinstance(conn, RecordingConnection):
        conn.send(text)
        return
    with conn.cursor() as cur:
        cur.execute(text.encode(), prepare=False)


def render(conn: AnyConnection, query: sql.Composable) -> str:
    """The exact SQL text a composed query sends (for logs and dry runs)."""
    return query.as_string(conn.recorder.reader if isinstance(conn, RecordingConnection) else conn)


def address(conn: AnyConnection) -> tuple[str, int, str]:
    """Host, port and database of a session (of the database a recording stands for)."""
    info = (conn.recorder.reader if isinstance(conn, RecordingConnection) else conn).info
    return info.host, info.port, info.dbname


# --- the dry run: the same code, recording instead of sending --------------------------------


class Recorder:
    """The statements a run would send, in order, as text: what a dry run prints.

    Code that writes takes a :class:`RecordingConnection` from :meth:`connect` or
    :meth:`session` where it would take a connection; the functions of this module then
    record each statement, rendered by psycopg against ``reader`` (a real read-only
    connection: quoting and parameters come out exactly as the server would get them), and
    send nothing. Reads return no rows, except :func:`probe` and :func:`try_lock`.
    """

    def __init__(self, reader: Connection) -> None:
        self.reader = reader
        self.lines: list[str] = []
        self.sessions = 0
        # What this recording has already "done" (bookkeeping migrations, say): the run would
        # not send it twice, though nothing of it reached the database.
        self.done: set[Any] = set()

    def note(self, text: str) -> None:
        self.lines.append(f"-- {text}")

    def connect(
        self, dbname: str, *, autocommit: bool = False, application_name: str | None = None
    ) -> RecordingConnection:
        self.sessions += 1
        mode = ", autocommit" if autocommit else ""
        name = f", application_name '{application_name[:63]}'" if application_name else ""
        self.note(f"session {self.sessions}: connect to '{dbname}'{name}{mode}")
        return RecordingConnection(self, autocommit=autocommit)

    @contextmanager
    def session(self, dbname: str, *, application_name: str | None = None) -> Iterator[RecordingConnection]:
        """Like :func:`session`: commits at the end of the block, rolls back on an error."""
        conn = self.connect(dbname, application_name=application_name)
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


class RecordingConnection:
    """Stands for a connection in a dry run (see :class:`Recorder`); sends nothing."""

    closed = False
    broken = False

    def __init__(self, recorder: Recorder, *, autocommit: bool) -> None:
        self.recorder = recorder
        self.autocommit = autocommit
        self._in_transaction = False

    def send(self, query: Query, params: Params = None) -> None:
        # psycopg opens a transaction with the first statement of a non-autocommit session.
        if not self.autocommit and not self._in_transaction:
            self.recorder.lines.append("BEGIN;")
            self._in_transaction = True
        if params is None:
            text = query if isinstance(query, str) else query.as_string(self.recorder.reader)
        else:
            text = psycopg.ClientCursor(self.recorder.reader).mogrify(query, params)
        self.recorder.lines.append(text.strip().rstrip(";") + ";")

    def commit(self) -> None:
        if self._in_transaction:
            self.recorder.lines.append("COMMIT;")
            self._in_transaction = False

    def rollback(self) -> None:
        if self._in_transaction:
            self.recorder.lines.append("ROLLBACK;")
            self._in_transaction = False

    def close(self) -> None:
        self.rollback()


# What the query functions above take: a real session, or a dry run's stand-in for one.
AnyConnection = Connection | RecordingConnection


@contextmanager
def recording(server: PgServer, dbname: str) -> Iterator[Recorder]:
    """A recorder whose statements are rendered against a read-only session on ``dbname``."""
    reader = connect(server, dbname, read_only=True, autocommit=True)
    try:
        yield Recorder(reader)
    finally:
        reader.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_pg_error(exc: psycopg.Error) -> str:
    """SQLSTATE, message, detail and hint of a server error, on one line."""
    diag = exc.diag
    parts = [f"SQLSTATE {exc.sqlstate}" if exc.sqlstate else "", diag.message_primary or _first_line(exc)]
    if diag.message_detail:
        parts.append(f"detail: {diag.message_detail}")
    if diag.message_hint:
        parts.append(f"hint: {diag.message_hint}")
    return "; ".join(p for p in parts if p)


PgError = psycopg.Error
OperationalError = psycopg.OperationalError
