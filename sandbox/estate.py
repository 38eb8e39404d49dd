"""Sandbox estate: a WSO2 API-M 4.0.0 estate on PostgreSQL to rehearse upgrades on.

Two new databases are created (the API-M DB, WSO2AM_DB, and the shared DB,
WSO2_SHARED_DB), loaded with a 4.0.0 schema (the genuine DDL of a product pack's
``dbscripts/`` folder, or our compact subset of it) and filled with generated data.

All data is generated inside PostgreSQL by the scripts in ``sandbox/sql`` (INSERT ...
SELECT over generate_series), so memory use does not grow with ``scale``, and from md5
hashes of series numbers instead of random(), so a scale always yields the same estate.
The SQL scripts take their one parameter from the session setting ``sandbox.scale``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from psycopg import Connection, sql

from apim_upgrade.errors import DatabaseError
from apim_upgrade.postgres.db import (
    PgError,
    PgServer,
    describe_pg_error,
    execute,
    execute_script,
    fetch_all,
    fetch_one,
    session,
)
from apim_upgrade.wso2.distribution import APIM_DDL, SHARED_DDL
from sandbox.errors import SandboxError

log = logging.getLogger(__name__)

# Database used only to create and drop the estate's databases.
MAINTENANCE_DB = "postgres"
MAX_SCALE = 10_000  # 100 million tokens: far beyond any sensible rehearsal
_PG_MAX_IDENTIFIER_BYTES = 63  # longer names are silently truncated by PostgreSQL

# Paths inside a product pack's dbscripts/ folder (see shared/wso2/README.md).


@dataclass(frozen=True)
class EstateSummary:
    apim_db: str
    shared_db: str
    schema_source: str  # "dbscripts:<path>" or "compact"
    tenants: int  # including the super tenant carbon.super (-1234)
    users: int
    apis: int
    invalid_openapi_apis: list[tuple[str, str, str]]  # (name, version, provider)
    applications: int
    subscriptions: int
    oauth_apps: int
    access_tokens: int
    row_counts: dict[str, dict[str, int]]  # {"apim": {table: rows}, "shared": {...}}


@dataclass(frozen=True)
class _Script:
    label: str  # named in error messages
    text: str


@dataclass(frozen=True)
class _Schema:
    source: str
    apim: _Script
    shared: _Script


def build_estate(
    server: PgServer,
    *,
    apim_db: str,
    shared_db: str,
    scale: int = 1,
    dbscripts: Path | None = None,
    owner: str | None = None,
) -> EstateSummary:
    """Create and fill both databases; on any failure the databases created here are dropped."""
    _check_arguments(apim_db, shared_db, scale)
    schema = _resolve_schema(dbscripts)
    created: list[str] = []
    succeeded = False
    started = time.monotonic()
    try:
        _create_databases(server, [apim_db, shared_db], owner, created)
        _run_script(server, apim_db, owner, schema.apim)
        _run_script(server, shared_db, owner, schema.shared)
        log.info("sandbox: %s schema loaded in %.1fs", schema.source, time.monotonic() - started)
        invalid = _fill(server, shared_db, owner, scale, "fill_shared.sql", _INVALID_APIS)
        _fill(server, apim_db, owner, scale, "fill_apimgt.sql", None)
        counts = {
            "apim": _row_counts(server, apim_db),
            "shared": _row_counts(server, shared_db),
        }
        log.info("sandbox: scale %d estate built in %.1fs", scale, time.monotonic() - started)
        succeeded = True
    finally:
        if not succeeded and created:
            _drop_quietly(server, created)
    apim, shared = counts["apim"], counts["shared"]
    return EstateSummary(
        apim_db=apim_db,
        shared_db=shared_db,
        schema_source=schema.source,
        tenants=shared["um_tenant"] + 1,  # carbon.super has no UM_TENANT row
        users=shared["um_user"],
        apis=apim["am_api"],
        invalid_openapi_apis=[(str(n), str(v), str(p)) for n, v, p in invalid or []],
        applications=apim["am_application"],
        subscriptions=apim["am_subscription"],
        oauth_apps=apim["idn_oauth_consumer_apps"],
        access_tokens=apim["idn_oauth2_access_token"],
        row_counts=counts,
    )


def drop_estate(server: PgServer, *names: str) -> None:
    """DROP DATABASE IF EXISTS ... WITH (FORCE) for each name (open sessions are ended)."""
    with (
        _step(MAINTENANCE_DB, "dropping sandbox databases"),
        session(server, MAINTENANCE_DB, autocommit=True) as conn,
    ):
        for name in names:
            execute(
                conn,
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
            )
            log.info("sandbox: dropped database %r (if it existed)", name)


# --------------------------------------------------------------------------- steps


# Read from the shared DB's plan before its session (and the temp tables) ends.
_INVALID_APIS = sql.SQL(
    "SELECT name, version, provider FROM pg_temp.sb_api WHERE invalid_kind IS NOT NULL ORDER BY api_id"
)

# Bulk-load settings for the fill session only: losing the last commits in a crash
# costs nothing in a sandbox, index builds and hash joins want memory, and JIT spends
# most of a second compiling each of the many short statements.
_SESSION_SETTINGS = [
    sql.SQL("SET jit TO off"),
    sql.SQL("SET synchronous_commit TO off"),
    sql.SQL("SET work_mem TO '64MB'"),
    sql.SQL("SET maintenance_work_mem TO '512MB'"),
]


def _check_arguments(apim_db: str, shared_db: str, scale: int) -> None:
    for name in (apim_db, shared_db):
        if not name or len(name.encode()) > _PG_MAX_IDENTIFIER_BYTES or "\x00" in name:
            raise SandboxError(
                f"sandbox: database name {name!r} is not usable: give 1 to "
                f"{_PG_MAX_IDENTIFIER_BYTES} bytes without NUL characters"
            )
    if apim_db == shared_db:
        raise SandboxError(f"sandbox: the API-M DB and the shared DB must differ (both are {apim_db!r})")
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
        raise SandboxError(f"sandbox: scale must be an integer from 1 to {MAX_SCALE}, not {scale!r}")


def _resolve_schema(dbscripts: Path | None) -> _Schema:
    if dbscripts is None:
        # Our compact schema is laid out like a pack's dbscripts/ tree, one folder per version.
        return _Schema("compact", _packaged(f"compact/4.0.0/{APIM_DDL}"), _packaged(f"compact/4.0.0/{SHARED_DDL}"))
    folder = Path(dbscripts)
    scripts = []
    for relative in (APIM_DDL, SHARED_DDL):
        path = folder / relative
        if not path.is_file():
            raise SandboxError(
                f"sandbox: {path} not found: --dbscripts must be a WSO2 API-M pack's dbscripts/ "
                f"folder holding {APIM_DDL} (API-M DB) and {SHARED_DDL} (shared DB)"
            )
        try:
            scripts.append(_Script(str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise SandboxError(f"sandbox: cannot read {path}: {exc}") from exc
    return _Schema(f"dbscripts:{folder.resolve()}", scripts[0], scripts[1])


def _packaged(name: str) -> _Script:
    text = resources.files("sandbox").joinpath("sql", *name.split("/")).read_text(encoding="utf-8")
    return _Script(f"sandbox/sql/{name}", text)


def _create_databases(server: PgServer, names: list[str], owner: str | None, created: list[str]) -> None:
    with (
        _step(MAINTENANCE_DB, "creating the sandbox databases"),
        session(server, MAINTENANCE_DB, autocommit=True) as conn,
    ):
        taken = fetch_all(conn, "SELECT datname FROM pg_database WHERE datname = ANY(%s) ORDER BY 1", (names,))
        if taken:
            listed = ", ".join(repr(row[0]) for row in taken)
            raise SandboxError(
                f"sandbox: database {listed} already exists on {server.describe()}; "
                "choose other names or drop it first (drop_estate)"
            )
        if owner is not None and fetch_one(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)) is None:
            raise SandboxError(f"sandbox: owner role {owner!r} does not exist on {server.describe()}")
        for name in names:
            # template0 + UTF8: a clean database whatever was added to template1, in the
            # encoding WSO2 requires for PostgreSQL.
            query = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))
            if owner is not None:
                query = sql.SQL("{} OWNER {}").format(query, sql.Identifier(owner))
            execute(conn, query)
            created.append(name)
            log.info("sandbox: created database %r", name)


@contextmanager
def _estate_session(server: PgServer, dbname: str, owner: str | None) -> Iterator[Connection[Any]]:
    """Autocommit session acting as ``owner``, so every object created belongs to it."""
    with session(server, dbname, autocommit=True) as conn:
        if owner is not None:
            execute(conn, sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
        yield conn


def _run_script(server: PgServer, dbname: str, owner: str | None, script: _Script) -> None:
    with _step(dbname, f"running {script.label}"), _estate_session(server, dbname, owner) as conn:
        execute_script(conn, script.text)


def _fill(
    server: PgServer,
    dbname: str,
    owner: str | None,
    scale: int,
    fill_name: str,
    result_query: sql.SQL | None,
) -> list[tuple[Any, ...]] | None:
    """Plan + fill in one transaction (temp tables live in the session), then ANALYZE."""
    result: list[tuple[Any, ...]] | None = None
    started = time.monotonic()
    with _step(dbname, "filling"), _estate_session(server, dbname, owner) as conn:
        with _step(dbname, "preparing the fill session"):
            for setting in _SESSION_SETTINGS:
                execute(conn, setting)
            execute(conn, "SELECT set_config('sandbox.scale', %s, false)", (str(scale),))
        with conn.transaction():
            for name in ("plan.sql", fill_name, "sync_sequences.sql"):
                script = _packaged(name)
                with _step(dbname, f"running {script.label}"):
                    execute_script(conn, script.text)
            if result_query is not None:
                with _step(dbname, "reading the plan"):
                    result = fetch_all(conn, result_query)
        with _step(dbname, "ANALYZE"):
            execute(conn, "ANALYZE")
    log.info("sandbox: %s filled in %.1fs", dbname, time.monotonic() - started)
    return result


def _row_counts(server: PgServer, dbname: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with _step(dbname, "counting rows"), session(server, dbname, read_only=True) as conn:
        tables = fetch_all(conn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        for (table,) in tables:
            row = fetch_one(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table)))
            counts[str(table).lower()] = int(row[0]) if row else 0
    return counts


def _drop_quietly(server: PgServer, names: list[str]) -> None:
    """Best-effort clean-up after a failed build; the original error is what matters."""
    try:
        drop_estate(server, *names)
    except SandboxError as exc:
        log.warning("sandbox: could not drop %s after the failure: %s", names, exc)


@contextmanager
def _step(dbname: str, what: str) -> Iterator[None]:
    """Turn driver and connection errors into a SandboxError naming database and step."""
    try:
        yield
    except PgError as exc:
        raise SandboxError(f"sandbox: {what} failed in database {dbname!r}: {describe_pg_error(exc)}") from exc
    except DatabaseError as exc:
        raise SandboxError(f"sandbox: {what} failed in database {dbname!r}: {exc}") from exc
