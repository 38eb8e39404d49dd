"""Bring a live database to the schema of a reference DDL (stand-in tooling, not product).

Two uses: the stand-in WSO2 server "migrates" a database to its own pack's DDL, and the
project's stand-in vendor upgrade scripts (4.2.0→4.3.0, 4.3.0→4.4.0; WSO2 ships the real
ones only inside its private migration client) are generated from pairs of genuine DDLs.

Statements come out in this order, each step needing only what earlier steps made:

1. ``SET LOCAL search_path`` (statements taken from the DDL are unqualified);
2. CREATE SEQUENCE for missing sequences (a new table's SERIAL ones come with the table);
3. drop extra or changed indexes and UNIQUE constraints, then changed primary keys;
4. add columns; a NOT NULL one without default is added nullable, backfilled, then
   SET NOT NULL, so the same statements work on tables with rows;
5. change type, default and nullability of existing columns;
6. drop extra columns (after 4, so a backfill can still read a column being replaced);
7. add primary keys, UNIQUE constraints and indexes (after the columns they cover);
8. create missing tables from the DDL's own statements (exactly the vendor definition,
   foreign keys and seed rows included), in file order, then OWNED BY for new sequences;
9. drop extra tables (only with ``drop_tables=True``) and extra sequences.

Conformance is what ``apim_upgrade.postgres.schema_diff`` compares; foreign keys, checks,
triggers and functions of existing tables are not synced.

``known``: the DDL of the version the database is at. When given, only objects that DDL
has are ever dropped (steps 3, 6 and 9): WSO2's migration client drops what its scripts
name, never a customer's own column, index, sequence or table, so neither does the
stand-in. Without it (generating a script between two fresh DDLs) everything extra goes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlparse
from psycopg import sql

from apim_upgrade.errors import ApimUpgradeError, DatabaseError
from apim_upgrade.postgres import db, queries
from apim_upgrade.postgres.catalog import SchemaObject
from apim_upgrade.postgres.db import PgServer
from apim_upgrade.postgres.schema_diff import (
    ColumnDef,
    SchemaCatalog,
    read_catalog,
    reference_catalog,
    scratch_database,
)
from apim_upgrade.runtime.atomic import write_atomically
from sandbox.errors import SandboxError

# Values for existing rows when the new DDL adds a column (key "table.column", value a
# SQL expression over the row). Grounded in WSO2's 4.0.0→4.1.0 scripts (shared/wso2/
# migration-scripts/apim-migration-client-4.2.0.21), which RENAME these columns or add
# them with a DEFAULT; a bare column name is used only while that column still exists.
WSO2_BACKFILL: dict[str, str] = {
    "am_application_attributes.app_attribute": "value",  # RENAME COLUMN VALUE TO APP_ATTRIBUTE
    "am_block_conditions.block_condition": "value",  # RENAME COLUMN VALUE TO BLOCK_CONDITION
    "am_key_manager.organization": "tenant_domain",  # RENAME COLUMN TENANT_DOMAIN TO ORGANIZATION
    "am_key_manager.token_type": "'DIRECT'",  # ADD TOKEN_TYPE ... DEFAULT 'DIRECT'
    "am_gateway_environment.organization": "tenant_domain",  # 4.1.0: organization = tenant domain
    "am_gateway_environment.provider": "'wso2'",  # ADD PROVIDER ... DEFAULT 'wso2'
    # Assumption (WSO2's 4.3.0 script is private): 4.3.0 tells Synapse ("Regular")
    # gateways from APK ones, and every environment before 4.3.0 is a Synapse gateway.
    "am_gateway_environment.gateway_type": "'Regular'",
}

_NAME = r'(?:"[^"]+"|[\w$]+)'
_QUALIFIED = rf"(?:{_NAME}\.)?({_NAME})"
_STATEMENT_KINDS = [
    ("table", rf"CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_QUALIFIED}"),
    ("sequence", rf"CREATE\s+SEQUENCE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_QUALIFIED}"),
    (
        "index",
        rf"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
        rf"(?:{_NAME}\s+)?ON\s+(?:ONLY\s+)?{_QUALIFIED}",
    ),
    ("alter", rf"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_QUALIFIED}"),
    ("insert", rf"INSERT\s+INTO\s+{_QUALIFIED}"),
    ("trigger", rf"CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\s+{_NAME}\s.*?\sON\s+{_QUALIFIED}"),
]
_PATTERNS = [(kind, re.compile(pattern, re.IGNORECASE | re.DOTALL)) for kind, pattern in _STATEMENT_KINDS]
_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_NEXTVAL = re.compile(r"nextval\('(?:[^']*\.)?\"?([^'\"]+)\"?'::regclass\)")
_BARE_COLUMN = re.compile(r"[a-z_][a-z0-9_$]*")
_INDEX_DEF = re.compile(r'^(CREATE (?:UNIQUE )?INDEX) ON (?:ONLY )?(?:"(?:[^"]|"")+"|\S+) (USING .*)$', re.DOTALL)

# Sandbox-only catalogue reads (the product's live in apim_upgrade.postgres.queries).
_SEQUENCES_SQL = """
SELECT s.relname, format_type(q.seqtypid, NULL), t.relname, a.attname
FROM pg_sequence q
JOIN pg_class s ON s.oid = q.seqrelid
JOIN pg_namespace n ON n.oid = s.relnamespace
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class t ON t.oid = d.refobjid
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE n.nspname = %s
"""
_CONSTRAINTS_SQL = """
SELECT i.relname, t.relname, con.conname, con.contype, pg_get_constraintdef(con.oid)
FROM pg_constraint con
JOIN pg_class t ON t.oid = con.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_class i ON i.oid = con.conindid
WHERE n.nspname = %s AND con.contype IN ('p', 'u', 'x')
"""


def _all_tables(table: str) -> bool:
    return True


# --------------------------------------------------------------------------- public API


def sync_statements(
    server: PgServer,
    live_db: str,
    reference_ddl: Path,
    *,
    include: Callable[[str], bool] = _all_tables,
    schema: str = "public",
    drop_tables: bool = False,
    backfill: Mapping[str, str] | None = None,
    known: Path | None = None,
) -> list[str]:
    """Statements (no trailing ';') that give ``live_db`` the schema of ``reference_ddl``.

    ``include`` selects tables (lower-case names); ``backfill`` overrides WSO2_BACKFILL;
    ``known``: the DDL of the live database's version: only its objects may be dropped.
    """
    ddl = _DdlFile.parse(Path(reference_ddl))
    with scratch_database(server, [Path(reference_ddl)], prefix="apim_upgrade_sync") as ref_db:
        ref = _Side.read(server, ref_db, "public")
    live = _Side.read(server, live_db, schema)
    known_objects = reference_catalog(server, Path(known)).objects() if known is not None else None
    planner = _Planner(
        live, ref, ddl, include, schema, drop_tables, WSO2_BACKFILL if backfill is None else backfill, known_objects
    )
    return planner.statements()


def apply_sync(
    server: PgServer,
    live_db: str,
    statements: list[str],
    *,
    on_statement: Callable[[int, str], None] | None = None,
    role: str | None = None,
) -> None:
    """Run ``statements`` in order in ONE transaction: all of them or none.

    ``role``: run as this role (SET LOCAL ROLE), so new tables and sequences belong to the
    database's owner like the rest of the schema, as when WSO2's own user migrates it.
    """
    with db.session(server, live_db) as conn:
        if role is not None:
            db.execute(conn, sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        for number, statement in enumerate(statements, 1):
            if on_statement is not None:
                on_statement(number, statement)
            try:
                db.execute(conn, statement)
            except db.PgError as exc:
                raise SandboxError(
                    f"schema sync of database {live_db!r}: statement {number} of {len(statements)} "
                    f"failed, so none was applied: {db.describe_pg_error(exc)}. Statement: "
                    f"{_shorten(statement)}. Fix the data it trips over (or pass a backfill "
                    "expression for the column) and run the sync again"
                ) from exc


def copy_at_version(
    server: PgServer, source: str, target: str, owner: str, ddl: Path, *, known: Path | None = None
) -> None:
    """``CREATE DATABASE target TEMPLATE source``, then brought to the schema of ``ddl`` with its data
    (as a version's migration would leave it): the starting point of schema-upgrade tests and benchmarks.
    ``known``: the source version's DDL; when given, a customised source keeps its own objects."""
    with db.session(server, "postgres", autocommit=True) as conn:
        db.execute(conn, queries.create_database_from_template(target, source, owner, None))
    apply_sync(server, target, sync_statements(server, target, ddl, known=known), role=owner)


def generate_upgrade_script(
    server: PgServer,
    from_ddl: Path,
    to_ddl: Path,
    out: Path,
    *,
    title: str,
    include: Callable[[str], bool] = _all_tables,
    backfill: Mapping[str, str] | None = None,
) -> Path:
    """Write a plain SQL script taking a fresh ``from_ddl`` schema to ``to_ddl``.

    Loadable with ``psql -v ON_ERROR_STOP=1 -1 -f``; deterministic (no timestamps), so
    its checksum only changes when the DDLs or this generator do.
    """
    with scratch_database(server, [Path(from_ddl)], prefix="apim_upgrade_gen") as scratch:
        statements = sync_statements(server, scratch, Path(to_ddl), include=include, backfill=backfill)
    header = [
        f"-- {' '.join(title.split())}",
        "--",
        "-- STAND-IN generated by apim-upgrade (sandbox/schema_sync.py), NOT a WSO2 file: WSO2",
        "-- ships the real upgrade script only inside its private migration client. This one",
        "-- brings the schema in line with the newer DDL; it migrates data only as far as",
        "-- sandbox/schema_sync.py WSO2_BACKFILL says.",
        f"-- from: {_label(Path(from_ddl))}",
        f"-- to:   {_label(Path(to_ddl))}",
        f"-- {len(statements)} statements. Run in one transaction: psql -v ON_ERROR_STOP=1 -1 -f <file>",
    ]
    body = "\n\n".join(statement + ";" for statement in statements)
    out = Path(out)
    try:
        write_atomically(out, "\n".join(header) + "\n\n" + body + "\n")  # never half a script
    except (OSError, ApimUpgradeError) as exc:
        raise SandboxError(f"cannot write upgrade script {out}: {exc}; choose a writable path") from exc
    return out


# --------------------------------------------------------------------------- the DDL file


@dataclass(frozen=True)
class _Statement:
    kind: str  # table, sequence, index, alter, insert, trigger or other
    target: str  # table (or sequence) it acts on, folded like PostgreSQL folds it
    text: str


@dataclass(frozen=True)
class _DdlFile:
    path: Path
    statements: list[_Statement]

    @classmethod
    def parse(cls, path: Path) -> _DdlFile:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SandboxError(f"cannot read reference DDL {path}: {exc}") from exc
        statements = []
        for raw in sqlparse.split(text):
            body = _LEADING_COMMENTS.sub("", raw, count=1)
            kind, target = "other", ""
            for name, pattern in _PATTERNS:
                match = pattern.match(body)
                if match:
                    kind, target = name, _fold(match.group(1))
                    break
            statements.append(_Statement(kind, target, raw))
        return cls(path, statements)

    def create_sequence(self, sequence: str) -> str | None:
        found = [s.text for s in self.statements if s.kind == "sequence" and s.target == sequence]
        return _clean(found[-1]) if found else None

    def sequence_table(self, sequence: str) -> str | None:
        """The table created next after the sequence: WSO2 puts a table's sequence just before it."""
        seen = False
        for s in self.statements:
            if s.kind == "sequence" and s.target == sequence:
                seen = True
            elif seen and s.kind == "table":
                return s.target
        return None

    def table_statements(self, tables: set[str]) -> list[str]:
        """CREATE TABLE of each table and what follows for it, in file order.

        Only statements after a table's LAST CREATE TABLE count: the WSO2 files drop
        and re-create a few tables, which drops whatever came before.
        """
        last = {s.target: n for n, s in enumerate(self.statements) if s.kind == "table" and s.target in tables}
        missing = sorted(tables - set(last))
        if missing:
            raise SandboxError(
                f"{self.path}: no CREATE TABLE statement found for {', '.join(missing)}, although "
                "loading the file creates them; this tool only copies plain CREATE TABLE statements"
            )
        return [
            _clean(s.text)
            for n, s in enumerate(self.statements)
            if s.kind in ("table", "index", "alter", "insert", "trigger") and s.target in last and n >= last[s.target]
        ]


def _fold(name: str) -> str:
    return name[1:-1] if name.startswith('"') else name.lower()


def _clean(text: str) -> str:
    return str(sqlparse.format(text, strip_comments=True)).strip().rstrip(";").strip()


# --------------------------------------------------------------------------- catalogue sides


@dataclass(frozen=True)
class _Constraint:
    table: str
    name: str
    kind: str  # p, u or x
    definition: str  # "PRIMARY KEY (id)", "UNIQUE (name, organization)"


@dataclass(frozen=True)
class _Sequence:
    data_type: str
    owner: tuple[str, str] | None  # (table, column) for SERIAL / OWNED BY


@dataclass
class _Side:
    catalog: SchemaCatalog
    constraints: dict[str, _Constraint]  # by index name
    sequences: dict[str, _Sequence]
    users: dict[str, set[str]] = field(default_factory=dict)  # sequence -> tables using it
    primary: dict[str, tuple[str, _Constraint]] = field(default_factory=dict)  # table -> (index, pk)

    @classmethod
    def read(cls, server: PgServer, dbname: str, schema: str) -> _Side:
        catalog = read_catalog(server, dbname, schema)
        try:
            with db.session(server, dbname, read_only=True) as conn:
                seq_rows = db.fetch_all(conn, _SEQUENCES_SQL, (schema,))
                con_rows = db.fetch_all(conn, _CONSTRAINTS_SQL, (schema,))
        except db.PgError as exc:
            raise DatabaseError(
                f"reading sequences and constraints of {dbname!r} at {server.describe()} failed: "
                f"{db.describe_pg_error(exc)}. Check that {server.user} may read its catalogue"
            ) from exc
        sequences = {str(n): _Sequence(str(t), (str(ot), str(oc)) if ot else None) for n, t, ot, oc in seq_rows}
        constraints = {str(i): _Constraint(str(t), str(c), str(k), str(d)) for i, t, c, k, d in con_rows}
        side = cls(catalog, constraints, sequences)
        side.primary = {c.table: (index, c) for index, c in constraints.items() if c.kind == "p"}
        for table, tdef in catalog.tables.items():
            for column in tdef.columns.values():
                for seq in _NEXTVAL.findall(column.default or ""):
                    side.users.setdefault(seq, set()).add(table)
        for seq, info in sequences.items():
            if info.owner:
                side.users.setdefault(seq, set()).add(info.owner[0])
        return side

    def pk(self, table: str) -> _Constraint | None:
        return self.primary[table][1] if table in self.primary else None

    def pk_index(self, table: str) -> str | None:
        return self.primary[table][0] if table in self.primary else None


# --------------------------------------------------------------------------- planning


class _Planner:
    def __init__(
        self,
        live: _Side,
        ref: _Side,
        ddl: _DdlFile,
        include: Callable[[str], bool],
        schema: str,
        drop_tables: bool,
        backfill: Mapping[str, str],
        known: set[SchemaObject] | None = None,
    ) -> None:
        self.live, self.ref, self.ddl, self.schema = live, ref, ddl, schema
        self.include, self.drop_tables, self.backfill = include, drop_tables, backfill
        self.known = known
        have, want = live.catalog.tables, ref.catalog.tables
        self.common = sorted(t for t in set(have) & set(want) if include(t))
        self.new = sorted(t for t in set(want) - set(have) if include(t))
        self.extra = sorted(t for t in set(have) - set(want) if include(t) and self._may_drop("table", t, ""))
        self.created_sequences: list[str] = []

    def statements(self) -> list[str]:
        out = self._create_sequences()
        for step in (
            self._drop_indexes,
            self._drop_primary_key,
            self._add_columns,
            self._alter_columns,
            self._drop_columns,
            self._add_primary_key,
            self._create_indexes,
        ):
            for table in self.common:
                out += step(table)
        if self.new:
            out += self.ddl.table_statements(set(self.new))
        out += self._own_sequences()
        if self.drop_tables:
            out += [self._q("DROP TABLE IF EXISTS {} CASCADE", self._t(t)) for t in self.extra]
        out += self._drop_sequences()
        if out:
            out.insert(0, self._q("SET LOCAL search_path TO {}", sql.Identifier(self.schema)))
        return out

    # --- helpers

    def _q(self, template: str, *parts: sql.Composable) -> str:
        return sql.SQL(template).format(*parts).as_string()

    def _t(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.schema, table)

    def _alter(self, table: str, action: str, *parts: sql.Composable) -> str:
        return self._q("ALTER TABLE {} " + action, self._t(table), *parts)

    def _may_drop(self, kind: str, table: str, name: str) -> bool:
        """Only what the known (source-version) DDL has: a customer's own objects are left alone."""
        return self.known is None or SchemaObject(kind, table, name) in self.known

    def _pk_changed(self, table: str) -> bool:
        a, b = self.live.pk(table), self.ref.pk(table)
        columns = (self.live.catalog.tables[table].primary_key, self.ref.catalog.tables[table].primary_key)
        return (a.name if a else None) != (b.name if b else None) or columns[0] != columns[1]

    def _kept_index(self, table: str, name: str) -> bool:
        """An index both sides have, same definition, and neither is a primary key to redo."""
        have = self.live.catalog.tables[table].indexes.get(name)
        want = self.ref.catalog.tables[table].indexes.get(name)
        if have is None or have != want:
            return False
        is_pk = name in (self.live.pk_index(table), self.ref.pk_index(table))
        return not is_pk or not self._pk_changed(table)

    def _fill(self, table: str, name: str, column: ColumnDef, *, use_default: bool) -> str | None:
        """Value for existing rows: a backfill entry, else the default, else a neutral value."""
        expression = self.backfill.get(f"{table}.{name}")
        live_columns = self.live.catalog.tables[table].columns
        if expression is not None and not (_BARE_COLUMN.fullmatch(expression) and expression not in live_columns):
            return expression
        if column.default is not None:
            # Adding a column with a default fills existing rows by itself (nextval per row).
            return column.default if use_default else None
        if column.nullable:
            return None
        return _neutral_value(table, name, column.data_type)

    def _sequence_users(self, side: _Side, sequence: str) -> set[str]:
        users = set(side.users.get(sequence, set()))
        if side is self.ref:
            owner_table = self.ddl.sequence_table(sequence)
            if owner_table:
                users.add(owner_table)
        return users

    # --- steps

    def _create_sequences(self) -> list[str]:
        out = []
        new = set(self.new)
        for seq in sorted(set(self.ref.catalog.sequences) - set(self.live.catalog.sequences)):
            users = self._sequence_users(self.ref, seq)
            if users and not any(self.include(t) for t in users):
                continue
            info = self.ref.sequences[seq]
            text = self.ddl.create_sequence(seq)
            if text is None and info.owner and info.owner[0] in new:
                continue  # SERIAL of a new table: its CREATE TABLE makes it
            if text is None:
                text = self._q("CREATE SEQUENCE {} AS {}", sql.Identifier(self.schema, seq), sql.SQL(info.data_type))
            out.append(text)
            self.created_sequences.append(seq)
        return out

    def _drop_indexes(self, table: str) -> list[str]:
        out = []
        for name in sorted(self.live.catalog.tables[table].indexes):
            if name == self.live.pk_index(table) or self._kept_index(table, name):
                continue
            if name not in self.ref.catalog.tables[table].indexes and not self._may_drop("index", table, name):
                continue  # not WSO2's: a customer's index stays
            constraint = self.live.constraints.get(name)
            if constraint is not None:
                out.append(self._alter(table, "DROP CONSTRAINT {}", sql.Identifier(constraint.name)))
            else:
                out.append(self._q("DROP INDEX {}", sql.Identifier(self.schema, name)))
        return out

    def _drop_primary_key(self, table: str) -> list[str]:
        pk = self.live.pk(table)
        if pk is None or not self._pk_changed(table):
            return []
        return [self._alter(table, "DROP CONSTRAINT {}", sql.Identifier(pk.name))]

    def _add_columns(self, table: str) -> list[str]:
        out = []
        have = self.live.catalog.tables[table].columns
        for name, column in self.ref.catalog.tables[table].columns.items():
            if name in have:
                continue
            c = sql.Identifier(name)
            spec = column.data_type + ("" if column.default is None else " DEFAULT " + column.default)
            fill = self._fill(table, name, column, use_default=False)
            if fill is None:
                # Nullable, or NOT NULL with a default: the default fills existing rows.
                spec += "" if column.nullable else " NOT NULL"
                out.append(self._alter(table, "ADD COLUMN {} {}", c, sql.SQL(spec)))
                continue
            out.append(self._alter(table, "ADD COLUMN {} {}", c, sql.SQL(spec)))
            out.append(self._q("UPDATE {} SET {} = {}", self._t(table), c, sql.SQL(fill)))
            if not column.nullable:
                out.append(self._alter(table, "ALTER COLUMN {} SET NOT NULL", c))
        return out

    def _alter_columns(self, table: str) -> list[str]:
        out = []
        want = self.ref.catalog.tables[table].columns
        for name, have in self.live.catalog.tables[table].columns.items():
            column = want.get(name)
            if column is None:
                continue
            c = sql.Identifier(name)
            default = have.default
            if have.data_type != column.data_type:
                if default is not None:
                    # The old default may not cast to the new type; the new one is set below.
                    out.append(self._alter(table, "ALTER COLUMN {} DROP DEFAULT", c))
                    default = None
                new_type = sql.SQL(column.data_type)
                if _base_type(have.data_type) == _base_type(column.data_type):
                    out.append(self._alter(table, "ALTER COLUMN {} TYPE {}", c, new_type))
                else:
                    out.append(self._alter(table, "ALTER COLUMN {} TYPE {} USING {}::{}", c, new_type, c, new_type))
            if default != column.default:
                if column.default is None:
                    out.append(self._alter(table, "ALTER COLUMN {} DROP DEFAULT", c))
                else:
                    out.append(self._alter(table, "ALTER COLUMN {} SET DEFAULT {}", c, sql.SQL(column.default)))
            if have.nullable and not column.nullable:
                fill = self._fill(table, name, column, use_default=True)
                if fill is not None:
                    out.append(self._q("UPDATE {} SET {} = {} WHERE {} IS NULL", self._t(table), c, sql.SQL(fill), c))
                out.append(self._alter(table, "ALTER COLUMN {} SET NOT NULL", c))
            elif column.nullable and not have.nullable:
                out.append(self._alter(table, "ALTER COLUMN {} DROP NOT NULL", c))
        return out

    def _drop_columns(self, table: str) -> list[str]:
        want = self.ref.catalog.tables[table].columns
        return [
            self._alter(table, "DROP COLUMN {}", sql.Identifier(name))
            for name in self.live.catalog.tables[table].columns
            if name not in want and self._may_drop("column", table, name)
        ]

    def _add_primary_key(self, table: str) -> list[str]:
        pk = self.ref.pk(table)
        if pk is None or not self._pk_changed(table):
            return []
        return [self._alter(table, "ADD CONSTRAINT {} {}", sql.Identifier(pk.name), sql.SQL(pk.definition))]

    def _create_indexes(self, table: str) -> list[str]:
        out = []
        for name, definition in sorted(self.ref.catalog.tables[table].indexes.items()):
            if name == self.ref.pk_index(table) or self._kept_index(table, name):
                continue
            constraint = self.ref.constraints.get(name)
            if constraint is not None:
                name_id, definition_sql = sql.Identifier(constraint.name), sql.SQL(constraint.definition)
                out.append(self._alter(table, "ADD CONSTRAINT {} {}", name_id, definition_sql))
                continue
            match = _INDEX_DEF.match(definition)
            if match is None:
                raise SandboxError(f"cannot rebuild index {name} on {table} from {definition!r}")
            head, tail = sql.SQL(match.group(1)), sql.SQL(match.group(2))
            out.append(self._q("{} {} ON {} {}", head, sql.Identifier(name), self._t(table), tail))
        return out

    def _own_sequences(self) -> list[str]:
        out = []
        for seq in self.created_sequences:
            owner = self.ref.sequences[seq].owner
            if owner and owner[0] in set(self.common) | set(self.new):
                out.append(
                    self._q(
                        "ALTER SEQUENCE {} OWNED BY {}",
                        sql.Identifier(self.schema, seq),
                        sql.Identifier(self.schema, *owner),
                    )
                )
        return out

    def _drop_sequences(self) -> list[str]:
        out = []
        synced = set(self.common) | (set(self.extra) if self.drop_tables else set())
        for seq in sorted(set(self.live.catalog.sequences) - set(self.ref.catalog.sequences)):
            if not self._may_drop("sequence", "", seq):
                continue  # not WSO2's: a customer's sequence stays
            if all(t in synced for t in self._sequence_users(self.live, seq)):
                # IF EXISTS: dropping an owning column or table may already have dropped it.
                out.append(self._q("DROP SEQUENCE IF EXISTS {}", sql.Identifier(self.schema, seq)))
        return out


def _base_type(data_type: str) -> str:
    return re.sub(r"\(.*?\)", "", data_type).strip()


def _neutral_value(table: str, column: str, data_type: str) -> str:
    """A value for NOT NULL columns of existing rows when nothing better is known."""
    base = _base_type(data_type)
    if base.startswith("character") or base == "text":
        return "''"
    if base in ("smallint", "integer", "bigint", "numeric", "real", "double precision"):
        return "0"
    if base == "boolean":
        return "false"
    if base.startswith("timestamp"):
        return "CURRENT_TIMESTAMP"
    if base == "date":
        return "CURRENT_DATE"
    if base == "bytea":
        return "''::bytea"
    raise SandboxError(
        f"column {table}.{column} ({data_type}) is NOT NULL without a default and existing rows "
        f"need a value: pass backfill={{'{table}.{column}': '<SQL expression>'}}"
    )


def _label(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "unreadable"
    return f"{'/'.join(path.parts[-3:])} (sha256 {digest})"


def _shorten(statement: str, limit: int = 300) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
