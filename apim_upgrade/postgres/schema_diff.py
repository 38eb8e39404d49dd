"""Schema conformance: does a database have exactly the schema of a WSO2 DDL?

A catalogue (tables, columns, primary keys, indexes, constraints, sequences of one schema) is read
from the live database in one snapshot; the reference catalogue is read the same way
from a scratch database loaded with the vendor DDL, so both sides are rendered by the
same server and compare literally. ``diff_catalogs`` lists what differs, one
``Difference`` each, with a stable ``key()`` a plan can use to accept a known one.

Normalised away (they would be false differences): the index's own name and the schema
qualifier inside index definitions (an index is matched by name, its definition
compared without it), and ``DEFAULT NULL`` (``NULL::type``), which is no default.
Kept literal: every other default, including ``nextval('x'::regclass)``, because the
sequence behind a column matters. Constraints that are no index (foreign keys, CHECK) are
only reported when extra (``constraint_extra``: a customisation); primary keys and UNIQUE
constraints are compared as their indexes. Not compared: column order, missing or changed
foreign keys and checks, triggers, functions, ownership, privileges and data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from apim_upgrade.errors import DatabaseError, DiskFull
from apim_upgrade.postgres import db, queries
from apim_upgrade.postgres.catalog import SchemaObject
from apim_upgrade.postgres.db import PgServer
from apim_upgrade.runtime.atomic import write_atomically

log = logging.getLogger(__name__)

MAINTENANCE_DB = "postgres"  # where scratch databases are created and dropped from
_PG_MAX_IDENTIFIER_BYTES = 63

KINDS = (
    "table_missing",
    "table_extra",
    "column_missing",
    "column_extra",
    "column_type",
    "column_nullable",
    "column_default",
    "primary_key",
    "index_missing",
    "index_extra",
    "index_definition",
    "constraint_extra",
    "sequence_missing",
    "sequence_extra",
)
_KIND_ORDER = {kind: n for n, kind in enumerate(KINDS)}
# "DEFAULT NULL" is stored as NULL::<type> (possibly cast twice); it means no default.
_NULL_DEFAULT = re.compile(r"^NULL(::[a-z ]+(\(\d+(,\s*\d+)?\))?(\[\])?)*$")


class ColumnDef(BaseModel):
    data_type: str  # format_type(): "character varying(255)", "integer", "timestamp without time zone"
    nullable: bool
    default: str | None = None  # as pg_get_expr prints it; DEFAULT NULL normalised to None


class TableDef(BaseModel):
    columns: dict[str, ColumnDef]
    primary_key: list[str] | None = None  # key order
    indexes: dict[str, str] = Field(default_factory=dict)  # index name -> definition without name/schema
    constraints: dict[str, str] = Field(default_factory=dict)  # constraint name -> pg_get_constraintdef


class SchemaCatalog(BaseModel):
    database: str
    db_schema: str
    tables: dict[str, TableDef]
    sequences: list[str]

    def objects(self) -> set[SchemaObject]:
        """Every table, column, index, constraint and sequence, named as a Snapshot names them."""
        out = {SchemaObject("sequence", "", s) for s in self.sequences}
        for table, tdef in self.tables.items():
            out.add(SchemaObject("table", table, ""))
            out |= {SchemaObject("column", table, c) for c in tdef.columns}
            out |= {SchemaObject("index", table, i) for i in tdef.indexes}
            out |= {SchemaObject("constraint", table, c) for c in tdef.constraints}
        return out


@dataclass(frozen=True)
class Difference:
    kind: str  # one of KINDS
    table: str  # "" for sequences
    name: str  # column, index or sequence name; "" for table-level kinds
    expected: str | None
    actual: str | None

    def key(self) -> str:
        """Stable id, e.g. ``column_type:am_api.version_comparable`` or ``sequence_extra:x_seq``."""
        if not self.table:
            return f"{self.kind}:{self.name}"
        if not self.name:
            return f"{self.kind}:{self.table}"
        return f"{self.kind}:{self.table}.{self.name}"

    def describe(self) -> str:
        return f"{self.key()}: expected {self.expected!r}, found {self.actual!r}"

    def extra_object(self) -> SchemaObject | None:
        """The object this difference says the database has and the reference does not (else None)."""
        kind = _EXTRA_KINDS.get(self.kind)
        return None if kind is None else SchemaObject(kind, self.table, self.name)


_EXTRA_KINDS = {
    "table_extra": "table",
    "column_extra": "column",
    "index_extra": "index",
    "constraint_extra": "constraint",
    "sequence_extra": "sequence",
}
# Constraints with an index of their own: compared (and reported) as that index.
_INDEX_BACKED = ("PRIMARY KEY", "UNIQUE", "EXCLUDE")


def extra_objects(differences: list[Difference]) -> list[SchemaObject]:
    """What a database has that the reference DDL does not: its customisations, one object each
    (an extra table's own columns, indexes and constraints are the table's, not listed apart)."""
    return sorted(o for o in (d.extra_object() for d in differences) if o is not None)


def removed_by_name(before: SchemaCatalog, after: SchemaCatalog) -> set[SchemaObject]:
    """What the vendor itself removes between two versions: in ``before``'s DDL, not in ``after``'s."""
    return before.objects() - after.objects()


# --------------------------------------------------------------------------- reading


def read_catalog(server: PgServer, dbname: str, schema: str = "public") -> SchemaCatalog:
    """Catalogue of ``schema`` in ``dbname``, read in one REPEATABLE READ read-only transaction."""
    if schema == queries.HISTORY_SCHEMA:
        raise DatabaseError(
            f"schema {schema!r} is apim-upgrade's own history schema, not a WSO2 schema; "
            "read the schema the WSO2 DDL was loaded into (usually 'public')"
        )
    try:
        with db.snapshot_transaction(server, dbname) as conn:
            db.fetch_one(conn, queries.CATALOG_SEARCH_PATH, (schema,))
            names = [str(r[0]) for r in db.fetch_all(conn, queries.TABLES, (schema,))]
            columns = db.fetch_all(conn, queries.CATALOG_COLUMNS, (schema,))
            keys = db.fetch_all(conn, queries.CATALOG_PRIMARY_KEYS, (schema,))
            indexes = db.fetch_all(conn, queries.CATALOG_INDEXES, (schema,))
            sequences = [str(r[0]) for r in db.fetch_all(conn, queries.CATALOG_SEQUENCES, (schema,))]
            constraints = db.fetch_all(conn, queries.CONSTRAINTS, (schema,))
    except db.PgError as exc:
        raise DatabaseError(
            f"reading the catalogue of schema {schema!r} in database {dbname!r} at {server.describe()} "
            f"failed: {db.describe_pg_error(exc)}. Check that the database exists and that "
            f"{server.user} may read its catalogue"
        ) from exc
    tables = {name: TableDef(columns={}) for name in names}
    for table, column, data_type, nullable, default in columns:
        if table in tables:
            tables[table].columns[column] = ColumnDef(
                data_type=data_type, nullable=bool(nullable), default=normalise_default(default)
            )
    for table, key in keys:
        if table in tables:
            tables[table].primary_key = list(key)
    for table, index, definition, q_index, q_schema, q_table in indexes:
        if table in tables:
            tables[table].indexes[index] = normalise_index(definition, q_index, q_schema, q_table)
    for table, name, definition in constraints:
        if table in tables:
            tables[table].constraints[str(name)] = str(definition)
    return SchemaCatalog(database=dbname, db_schema=schema, tables=tables, sequences=sequences)


def normalise_default(default: str | None) -> str | None:
    if default is None or _NULL_DEFAULT.match(default):
        return None
    return default


def normalise_index(definition: str, q_index: str, q_schema: str, q_table: str) -> str:
    """Drop the index name and the table's schema qualifier from pg_get_indexdef output.

    ``CREATE UNIQUE INDEX am_api_pkey ON public.am_api USING btree (api_id)`` becomes
    ``CREATE UNIQUE INDEX ON am_api USING btree (api_id)``. The ``q_*`` arguments are
    the names exactly as the server quotes them (quote_ident), so nothing is guessed.
    """
    text = definition.replace(f" INDEX {q_index} ON ", " INDEX ON ", 1)
    for only in ("ONLY ", ""):
        qualified = f" ON {only}{q_schema}.{q_table} "
        if qualified in text:
            return text.replace(qualified, f" ON {only}{q_table} ", 1)
    return text


# --------------------------------------------------------------------------- diffing


def diff_catalogs(actual: SchemaCatalog, expected: SchemaCatalog) -> list[Difference]:
    """Every difference between ``actual`` and ``expected``, sorted by table, kind and name."""
    out: list[Difference] = []
    for table in sorted(set(actual.tables) | set(expected.tables)):
        have, want = actual.tables.get(table), expected.tables.get(table)
        if want is None:
            out.append(Difference("table_extra", table, "", None, _describe_table(have)))
        elif have is None:
            # Its columns and indexes are not listed one by one: the table is the finding.
            out.append(Difference("table_missing", table, "", _describe_table(want), None))
        else:
            out.extend(_diff_table(table, have, want))
    have_seq, want_seq = set(actual.sequences), set(expected.sequences)
    out += [Difference("sequence_missing", "", s, s, None) for s in sorted(want_seq - have_seq)]
    out += [Difference("sequence_extra", "", s, None, s) for s in sorted(have_seq - want_seq)]
    out.sort(key=lambda d: (d.table, _KIND_ORDER[d.kind], d.name))
    return out


def _diff_table(table: str, have: TableDef, want: TableDef) -> list[Difference]:
    out: list[Difference] = []
    for name in sorted(set(have.columns) | set(want.columns)):
        a, e = have.columns.get(name), want.columns.get(name)
        if e is None:
            out.append(Difference("column_extra", table, name, None, describe_column(a)))
        elif a is None:
            out.append(Difference("column_missing", table, name, describe_column(e), None))
        else:
            if a.data_type != e.data_type:
                out.append(Difference("column_type", table, name, e.data_type, a.data_type))
            if a.nullable != e.nullable:
                out.append(Difference("column_nullable", table, name, _null(e), _null(a)))
            if a.default != e.default:
                out.append(Difference("column_default", table, name, e.default, a.default))
    if have.primary_key != want.primary_key:
        out.append(Difference("primary_key", table, "", _key(want.primary_key), _key(have.primary_key)))
    for name in sorted(set(have.indexes) | set(want.indexes)):
        a_def, e_def = have.indexes.get(name), want.indexes.get(name)
        if e_def is None:
            out.append(Difference("index_extra", table, name, None, a_def))
        elif a_def is None:
            out.append(Difference("index_missing", table, name, e_def, None))
        elif a_def != e_def:
            out.append(Difference("index_definition", table, name, e_def, a_def))
    for name in sorted(set(have.constraints) - set(want.constraints)):
        definition = have.constraints[name]
        if not definition.startswith(_INDEX_BACKED):
            out.append(Difference("constraint_extra", table, name, None, definition))
    return out


def describe_column(column: ColumnDef | None) -> str | None:
    if column is None:
        return None
    text = column.data_type + ("" if column.nullable else " NOT NULL")
    return text + (f" DEFAULT {column.default}" if column.default is not None else "")


def _describe_table(table: TableDef | None) -> str | None:
    if table is None:
        return None
    return f"{len(table.columns)} columns, primary key {_key(table.primary_key)}, {len(table.indexes)} indexes"


def _null(column: ColumnDef) -> str:
    return "NULL" if column.nullable else "NOT NULL"


def _key(columns: list[str] | None) -> str | None:
    return None if columns is None else "(" + ", ".join(columns) + ")"


# --------------------------------------------------------------------------- references


@contextmanager
def scratch_database(server: PgServer, ddl_files: list[Path], *, prefix: str = "apim_upgrade_scratch") -> Iterator[str]:
    """A new, uniquely named database loaded with each DDL file in turn; always dropped.

    Each file runs as one simple-query script (the WSO2 files carry their own
    BEGIN/COMMIT), so a file loads exactly as ``psql -f`` would load it.
    """
    scripts = [(Path(path), _read_ddl(Path(path))) for path in ddl_files]  # fail before creating
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    if len(name.encode()) > _PG_MAX_IDENTIFIER_BYTES:
        raise DatabaseError(
            f"scratch database prefix {prefix!r} is too long: '{name}' exceeds PostgreSQL's "
            f"{_PG_MAX_IDENTIFIER_BYTES}-byte identifier limit; use a prefix of at most "
            f"{_PG_MAX_IDENTIFIER_BYTES - 13} bytes"
        )
    _maintenance(server, queries.create_scratch_database(name), f"creating scratch database {name!r}")
    failed = True
    try:
        with db.session(server, name, autocommit=True) as conn:
            for path, text in scripts:
                with db.failure_named(
                    f"loading DDL file {path} into scratch database {name!r}",
                    ". Check that the file is a PostgreSQL DDL script for an empty database (e.g. "
                    "dbscripts/<version>/apimgt/postgresql.sql) and that it loads with: "
                    "psql -v ON_ERROR_STOP=1 -f <file>",
                ):
                    db.execute_script(conn, text)
        log.debug("scratch database %s loaded from %s", name, [str(p) for p, _ in scripts])
        yield name
        failed = False
    finally:
        _drop_scratch(server, name, already_failing=failed)


# Bump when SchemaCatalog or read_catalog's normalisation changes: old entries are then never read.
CACHE_FORMAT = 2
CACHE_DIR_VARIABLE = "APIM_UPGRADE_CACHE_DIR"


def user_cache_dir() -> Path:
    """Where reference catalogues are kept across work directories and runs.

    ``$APIM_UPGRADE_CACHE_DIR``, else ``$XDG_CACHE_HOME/apim-upgrade``, else ``~/.cache/apim-upgrade``.
    """
    if os.environ.get(CACHE_DIR_VARIABLE):
        return Path(os.environ[CACHE_DIR_VARIABLE])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "apim-upgrade"


def reference_catalog(server: PgServer, ddl_file: Path, cache_dir: Path | None = None) -> SchemaCatalog:
    """Catalogue a fresh install of ``ddl_file`` has (``database`` names the file, not the scratch db).

    Loading the DDL costs a scratch database (~2 s), so the catalogue is cached in
    ``cache_dir`` (default: ``user_cache_dir()``), shared by every work directory. The
    key is the SHA-256 of the DDL's text, the server's major version (format_type and
    pg_get_indexdef print differently across majors) and ``CACHE_FORMAT``. The cache is
    only an optimisation: an unreadable or corrupt entry is rebuilt, an unwritable
    directory only logs a warning.
    """
    digest = hashlib.sha256(_read_ddl(ddl_file).encode()).hexdigest()
    entry = (cache_dir or user_cache_dir()) / f"reference-v{CACHE_FORMAT}-pg{_server_major(server)}-{digest}.json"
    label = {"database": f"ddl:{ddl_file}"}
    try:
        return SchemaCatalog.model_validate_json(entry.read_bytes()).model_copy(update=label)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        log.warning("ignoring unreadable reference catalogue cache entry %s (%s); rebuilding it", entry, exc)
    with scratch_database(server, [ddl_file]) as name:
        catalog = read_catalog(server, name).model_copy(update=label)
    _write_atomically(entry, catalog.model_dump_json())
    return catalog


def _server_major(server: PgServer) -> int:
    advice = f". Check that the server is up and that {server.user} may connect to {MAINTENANCE_DB!r}"
    with (
        db.failure_named(f"reading the server version at {server.describe()}", advice),
        db.session(server, MAINTENANCE_DB, autocommit=True) as conn,
    ):
        version_num = db.fetch_one(conn, queries.SERVER_VERSION)
    return int(version_num[0]) // 10000 if version_num else 0


def _write_atomically(entry: Path, text: str) -> None:
    """A unique temporary file renamed over the entry: readers see the old entry or the whole new one."""
    try:
        write_atomically(entry, text)
    except (OSError, DiskFull) as exc:
        log.warning(
            "cannot write reference catalogue cache entry %s (%s); continuing without it. "
            "Set %s to a writable directory to cache it",
            entry,
            exc,
            CACHE_DIR_VARIABLE,
        )


def _read_ddl(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatabaseError(
            f"cannot read DDL file {path}: {exc}. Point it at a WSO2 pack's dbscripts/<...>/postgresql.sql (UTF-8 text)"
        ) from exc


def _maintenance(server: PgServer, query: db.Query, what: str) -> None:
    advice = f". The role {server.user} needs CREATEDB (or superuser) on that server"
    with (
        db.failure_named(f"{what} at {server.describe()}", advice),
        db.session(server, MAINTENANCE_DB, autocommit=True) as conn,
    ):
        db.execute(conn, query)


def _drop_scratch(server: PgServer, name: str, *, already_failing: bool) -> None:
    try:
        _maintenance(server, queries.drop_database(name), f"dropping scratch database {name!r}")
    except DatabaseError as exc:
        if not already_failing:
            raise
        # The original error is the one to report; only say what is left behind.
        log.warning("%s (drop it by hand: DROP DATABASE %s WITH (FORCE))", exc, name)
