"""The compact schema of every version equals WSO2's genuine DDL on the compact tables.

``sandbox/sql/compact/<version>/`` is laid out like a pack's ``dbscripts/<version>/``
folder (``apimgt/postgresql.sql`` for WSO2AM_DB, ``postgresql.sql`` for WSO2_SHARED_DB)
but defines only the 33 tables the sandbox fills. For each version and database the
compact file and the genuine file are loaded into two fresh databases on the session's
PostgreSQL and their catalogs, restricted to the compact tables, must be identical:
columns (position, type, nullability, default), constraints (primary, unique, check and
foreign keys among compact tables), indexes, triggers and the sequences the tables own
or draw from. Both databases are always dropped.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from apim_upgrade.postgres.db import PgServer, execute, execute_script, fetch_all, session
from tests.conftest import SHARED_WSO2

HERE = Path(__file__).resolve()
COMPACT_ROOT = HERE.parents[1] / "sandbox" / "sql" / "compact"
GENUINE_ROOT = SHARED_WSO2 / "dbscripts"
VERSIONS = ("4.0.0", "4.2.0", "4.3.0", "4.4.0")

APIM_TABLES = frozenset({
    "am_api", "am_api_default_version", "am_api_lc_event", "am_api_throttle_policy",
    "am_api_url_mapping", "am_application", "am_application_key_mapping",
    "am_deployment_revision_mapping", "am_key_manager", "am_policy_application",
    "am_policy_subscription", "am_revision", "am_subscriber", "am_subscription",
    "idn_oauth2_access_token", "idn_oauth2_access_token_scope", "idn_oauth_consumer_apps",
})  # fmt: skip
SHARED_TABLES = frozenset({
    "reg_content", "reg_log", "reg_path", "reg_property", "reg_resource",
    "reg_resource_property", "reg_resource_tag", "reg_tag", "um_domain", "um_hybrid_role",
    "um_hybrid_user_role", "um_role", "um_tenant", "um_user", "um_user_attribute",
    "um_user_role",
})  # fmt: skip
# role -> (file inside dbscripts/<version>/, tables the compact file defines)
DATABASES = {
    "apimgt": (Path("apimgt") / "postgresql.sql", APIM_TABLES),
    "shared": (Path("postgresql.sql"), SHARED_TABLES),
}

Catalog = dict[str, dict[tuple[Any, ...], Any]]

# Every query takes the table names as %(tables)s (and %(all_tables)s: true to see every
# object of the database, not only those of the named tables) and returns rows of
# (key..., value); the values of one key must be equal. %% is a literal % for psycopg.
_CATALOG_QUERIES = {
    "tables": """
        SELECT c.relname, c.relkind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
          AND (c.relname = ANY(%(tables)s) OR %(all_tables)s)""",
    "columns": """
        SELECT c.relname, a.attname,
               format('#%%s %%s%%s%%s%%s%%s', row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                      format_type(a.atttypid, a.atttypmod),
                      CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE ' NULL' END,
                      ' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid),
                      CASE a.attidentity WHEN 'a' THEN ' IDENTITY ALWAYS'
                                         WHEN 'd' THEN ' IDENTITY BY DEFAULT' ELSE '' END,
                      CASE WHEN a.attgenerated <> '' THEN ' GENERATED' ELSE '' END)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND c.relname = ANY(%(tables)s)
          AND a.attnum > 0 AND NOT a.attisdropped""",
    # Foreign keys to tables outside the compact set are out of scope.
    "constraints": """
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_class r ON r.oid = k.confrelid
        WHERE n.nspname = 'public' AND c.relname = ANY(%(tables)s)
          AND (k.contype <> 'f' OR r.relname = ANY(%(tables)s))""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename = ANY(%(tables)s)""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relname = ANY(%(tables)s) AND NOT t.tgisinternal""",
    # Sequences a compact table's column owns (OWNED BY, serial, identity) or whose
    # nextval() a compact table's default calls, with their parameters and users (in
    # the compact database: every sequence, so that an unused one shows up too).
    "sequences": """
        WITH links AS (
            SELECT d.objid AS seq, c.relname || '.' || a.attname AS col, 'owned by' AS how
            FROM pg_depend d
            JOIN pg_class c ON c.oid = d.refobjid
            JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
            WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
              AND d.deptype IN ('a', 'i') AND c.relname = ANY(%(tables)s)
            UNION
            SELECT d.refobjid, c.relname || '.' || a.attname, 'default of'
            FROM pg_depend d
            JOIN pg_attrdef ad ON ad.oid = d.objid
            JOIN pg_class c ON c.oid = ad.adrelid
            JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
            WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
              AND c.relname = ANY(%(tables)s)
        )
        SELECT s.relname,
               format('%%s start %%s increment %%s min %%s max %%s cache %%s%%s; %%s',
                      format_type(q.seqtypid, NULL), q.seqstart, q.seqincrement, q.seqmin,
                      q.seqmax, q.seqcache, CASE WHEN q.seqcycle THEN ' cycle' ELSE '' END,
                      coalesce((SELECT string_agg(l.how || ' ' || l.col, ', ' ORDER BY l.how, l.col)
                                FROM links l WHERE l.seq = s.oid), 'not used by the compact tables'))
        FROM pg_class s
        JOIN pg_sequence q ON q.seqrelid = s.oid
        JOIN pg_namespace n ON n.oid = s.relnamespace
        WHERE n.nspname = 'public' AND (s.oid IN (SELECT seq FROM links) OR %(all_tables)s)""",
}


def _normalise(aspect: str, value: Any) -> Any:
    if aspect == "indexes":
        # Same definition whatever schema the database was loaded into.
        return re.sub(r"\bON (ONLY )?public\.", r"ON \1", str(value))
    return value


def _catalog(server: PgServer, dbname: str, tables: frozenset[str], *, all_tables: bool) -> Catalog:
    params = {"tables": sorted(tables), "all_tables": all_tables}
    catalog: Catalog = {}
    with session(server, dbname, read_only=True) as conn:
        for aspect, query in _CATALOG_QUERIES.items():
            rows = fetch_all(conn, query, params)
            catalog[aspect] = {tuple(row[:-1]): _normalise(aspect, row[-1]) for row in rows}
    return catalog


def _differences(compact: Catalog, genuine: Catalog) -> list[str]:
    """Readable lines: what the compact schema lacks, adds or defines differently."""
    lines = []
    for aspect in _CATALOG_QUERIES:
        ours, theirs = compact[aspect], genuine[aspect]
        for key in sorted(theirs.keys() - ours.keys()):
            lines.append(f"{aspect}: missing from compact {'.'.join(key)}: {theirs[key]}")
        for key in sorted(ours.keys() - theirs.keys()):
            lines.append(f"{aspect}: only in compact {'.'.join(key)}: {ours[key]}")
        for key in sorted(ours.keys() & theirs.keys()):
            if ours[key] != theirs[key]:
                lines.append(f"{aspect}: differs {'.'.join(key)}:")
                lines.append(f"    genuine: {theirs[key]}")
                lines.append(f"    compact: {ours[key]}")
    return lines


@pytest.fixture
def scratch_databases(pg: PgServer) -> Iterator[list[str]]:
    """Names appended here are created by the test and dropped afterwards, whatever happens."""
    names: list[str] = []
    yield names
    with session(pg, "postgres", autocommit=True) as conn:
        for name in names:
            execute(conn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _load(server: PgServer, names: list[str], label: str, script: Path) -> str:
    name = f"cmpschema_{label}_{uuid.uuid4().hex[:8]}"
    names.append(name)
    with session(server, "postgres", autocommit=True) as conn:
        execute(
            conn,
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name)),
        )
    with session(server, name, autocommit=True) as conn:
        execute(conn, "SET client_min_messages TO warning")
        execute_script(conn, script.read_text(encoding="utf-8"))
    return name


@pytest.mark.parametrize("role", sorted(DATABASES))
@pytest.mark.parametrize("version", VERSIONS)
def test_compact_schema_equals_genuine_ddl(pg: PgServer, scratch_databases: list[str], version: str, role: str) -> None:
    relative, tables = DATABASES[role]
    genuine_file = GENUINE_ROOT / version / relative
    if not genuine_file.is_file():
        pytest.skip(f"genuine WSO2 {version} DDL not found at {genuine_file} (needs {GENUINE_ROOT})")
    compact_file = COMPACT_ROOT / version / relative
    assert compact_file.is_file(), f"compact {version} {role} schema missing: {compact_file}"

    tag = f"{version.replace('.', '')}_{role}"
    compact_db = _load(pg, scratch_databases, f"c{tag}", compact_file)
    genuine_db = _load(pg, scratch_databases, f"g{tag}", genuine_file)
    # The compact file must define exactly the compact tables and nothing else.
    compact = _catalog(pg, compact_db, tables, all_tables=True)
    genuine = _catalog(pg, genuine_db, tables, all_tables=False)

    problems = _differences(compact, genuine)
    if problems:
        pytest.fail(
            f"{compact_file} differs from {genuine_file} on the compact tables "
            f"({len(problems)} differences):\n  " + "\n  ".join(problems),
            pytrace=False,
        )
