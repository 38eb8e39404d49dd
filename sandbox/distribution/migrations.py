"""What the stand-in migration clients share: diff-driven schema changes and one-transaction steps.

Schema changes are diff-driven: a client compares the live database with the pack's
own ``dbscripts/`` DDL (sandbox.schema_sync) and applies what differs, so a rerun
after a crash converges instead of failing on "column already exists". Like WSO2's
clients, whose scripts name what they drop, it drops only objects of the version it
migrates from (the kit's ``migration-resources/standin-from-dbscripts/``): a customer's
own tables, columns, indexes and sequences are left alone. The clients themselves are
identity_client.py (IS) and api_client.py (API-M 4.0.0 -> 4.2.0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from apim_upgrade.errors import DatabaseError
from apim_upgrade.postgres import db
from sandbox.distribution.config import Datasource
from sandbox.distribution.registry import guard
from sandbox.distribution.runtime import Context, ServerExit
from sandbox.errors import SandboxError

Statement = tuple[sql.Composed | sql.SQL, tuple[Any, ...] | None]  # query and its parameters


class MigrationStepFailed(SandboxError):
    """A step of a migration client failed; the message is the client's ERROR text."""


@dataclass(frozen=True)
class SyncTarget:
    source: Datasource
    ddl: Path
    include: Callable[[str], bool]
    known: Path  # DDL of the version migrated from: only its objects may be dropped


# In the kit's migration-resources: the DDL (pack layout) of the version the clients migrate from.
FROM_DBSCRIPTS = Path("standin-from-dbscripts")


def from_ddl(ctx: Context, relative: Path) -> Path:
    """The migrated-from version's DDL file the installed kit carries (``relative``: APIM_DDL or SHARED_DDL)."""
    return ctx.carbon_home / "migration-resources" / FROM_DBSCRIPTS / relative


def prefixed(prefixes: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda table: table.lower().startswith(prefixes)


_COLUMNS = """
SELECT c.table_name, c.column_name FROM information_schema.columns c
WHERE c.table_schema = current_schema()
"""


def run_in_transaction(
    source: Datasource,
    what: str,
    build: Callable[[dict[str, set[str]]], list[Statement]],
) -> None:
    """Read the catalog, build the statements from it and run them, all in one transaction."""
    assert source.server is not None and source.dbname is not None  # checked by database()
    with guard(source, what), db.session(source.server, source.dbname) as conn, conn.transaction():
        columns: dict[str, set[str]] = {}
        for table, column in db.fetch_all(conn, _COLUMNS):
            columns.setdefault(str(table).lower(), set()).add(str(column).lower())
        for query, params in build(columns):
            db.execute(conn, query, params)


def converge(ctx: Context, step: str, targets: list[SyncTarget], *, logger: str, crash_lines: tuple[str, ...]) -> None:
    """Bring each target's tables to the pack's DDL; on ``mid-migration`` commit a part and crash."""
    from sandbox import schema_sync  # lazily: only migration runs need it (and its scratch databases)

    for target in targets:
        source = database(target.source)
        assert source.server is not None and source.dbname is not None  # checked by database()
        for script in (target.ddl, target.known):
            if not script.is_file():
                raise MigrationStepFailed(f"Schema script {script} of this pack or its migration kit is missing")
        with guard(source, f"bringing the schema to {target.ddl.parent.name}/{target.ddl.name}"):
            statements = schema_sync.sync_statements(
                source.server, source.dbname, target.ddl, include=target.include, known=target.known
            )
            if ctx.failure.at(step, "mid-migration"):
                part = statements[: max(1, len(statements) // 2)]
                if part:
                    schema_sync.apply_sync(source.server, source.dbname, part)
                for line in crash_lines:
                    ctx.console.error(logger, line)
                raise ServerExit(1)
            if statements:
                schema_sync.apply_sync(source.server, source.dbname, statements)
        ctx.pause(0.2)


def database(source: Datasource) -> Datasource:
    if source.server is None or source.dbname is None:
        raise DatabaseError(f"{source.name} is an embedded H2 database; this stand-in migrates PostgreSQL only")
    return source
