"""Every SQL statement apim-upgrade sends, in one place.

Identifiers (database, schema, table, role and index names) are always
composed with ``psycopg.sql.Identifier``: a name holding quotes or
semicolons stays an ordinary name.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

# --- server and roles -------------------------------------------------------

SERVER_VERSION = "SELECT current_setting('server_version_num')::int, version()"

ROLE_PRIVILEGES = """
SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user
"""

ROLE_EXISTS = "SELECT 1 FROM pg_roles WHERE rolname = %s"

UUID_OSSP_AVAILABLE = """
SELECT default_version, installed_version
FROM pg_available_extensions WHERE name = 'uuid-ossp'
"""

DATABASE_INFO = """
SELECT d.datname, pg_database_size(d.oid), shobj_description(d.oid, 'pg_database'),
       pg_get_userbyid(d.datdba)
FROM pg_database d WHERE d.datname = ANY(%s)
"""

# pg_settings hides the row (rather than erroring) from roles that may not see it.
DATA_DIRECTORY = "SELECT setting FROM pg_settings WHERE name = 'data_directory'"

OTHER_SESSIONS = """
SELECT datname, pid, coalesce(nullif(application_name, ''), '(no application name)'),
       coalesce(host(client_addr), 'local socket'), usename, state
FROM pg_stat_activity
WHERE datname = ANY(%s) AND pid <> pg_backend_pid()
ORDER BY datname, pid
"""

TERMINATE_OTHER_SESSIONS = """
SELECT pid, pg_terminate_backend(pid)
FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()
"""

# --- database copies ---------------------------------------------------------


def create_database_from_template(
    target: str, template: str, owner: str, strategy: str | None
) -> sql.Composed:
    query = sql.SQL("CREATE DATABASE {} WITH TEMPLATE {} OWNER {}").format(
        sql.Identifier(target), sql.Identifier(template), sql.Identifier(owner)
    )
    if strategy:
        query += sql.SQL(" STRATEGY {}").format(sql.Identifier(strategy.upper()))
    return query


def drop_database(name: str) -> sql.Composed:
    return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))


def comment_on_database(name: str, comment: str) -> sql.Composed:
    return sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment))


# The registry indexes WSO2's 4.2.0 migration expects (upgrade guide, step
# "Update Database for 4.2.0"); REG_RESOURCE_TAG/PROPERTY live in the shared DB.
REGISTRY_INDEXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "reg_resource_tag_ind_by_reg_tag_id": ("reg_resource_tag", ("reg_tag_id", "reg_tenant_id")),
    "reg_resource_property_ind_by_reg_prop_id": (
        "reg_resource_property",
        ("reg_tenant_id", "reg_property_id"),
    ),
}


def create_index_if_not_exists(schema: str, index: str, table: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} ({})").format(
        sql.Identifier(index),
        sql.Identifier(schema),
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
    )


# --- catalogue and row counts -------------------------------------------------

TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""

COLUMNS = """
SELECT table_name, column_name, data_type,
       coalesce(character_maximum_length, numeric_precision), is_nullable = 'YES',
       column_default
FROM information_schema.columns WHERE table_schema = %s
ORDER BY table_name, ordinal_position
"""

INDEXES = """
SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %s
ORDER BY tablename, indexname
"""


def count_rows_union(schema: str, tables: Sequence[str]) -> sql.Composed:
    """One statement counting every table, so all counts share one snapshot."""
    parts = [
        sql.SQL("SELECT {} AS table_name, count(*) AS row_count FROM {}.{}").format(
            sql.Literal(t), sql.Identifier(schema), sql.Identifier(t)
        )
        for t in tables
    ]
    return sql.SQL(" UNION ALL ").join(parts)


def row_count_comparison(schema: str, expected: dict[str, int], actual_tables: Sequence[str]) -> sql.Composed:
    """Expected (snapshot) and actual counts side by side, one row per table.

    Computed entirely in the database: the gate never pulls table rows out.
    A table missing on either side shows up with a NULL count.
    """
    if expected:
        expected_rows = sql.SQL(", ").join(
            sql.SQL("({}, {}::bigint)").format(sql.Literal(t), sql.Literal(n))
            for t, n in sorted(expected.items())
        )
        expected_sql = sql.SQL("SELECT * FROM (VALUES {}) AS e(table_name, expected_rows)").format(
            expected_rows
        )
    else:
        expected_sql = sql.Composed(
            [sql.SQL("SELECT NULL::text AS table_name, NULL::bigint AS expected_rows WHERE false")]
        )
    actual_sql = (
        count_rows_union(schema, actual_tables)
        if actual_tables
        else sql.Composed([sql.SQL("SELECT NULL::text AS table_name, NULL::bigint AS row_count WHERE false")])
    )
    return sql.SQL(
        "SELECT coalesce(e.table_name, a.table_name) AS table_name, e.expected_rows, "
        "a.row_count AS actual_rows FROM ({}) e FULL OUTER JOIN ({}) a USING (table_name)"
    ).format(expected_sql, actual_sql)


def index_names(schema: str) -> sql.Composed:
    return sql.SQL("SELECT indexname FROM pg_indexes WHERE schemaname = {}").format(sql.Literal(schema))


# --- audit history schema (inside the target API-M database) -----------------

HISTORY_SCHEMA = "apim_upgrade"


def create_history_schema(owner: str | None = None) -> sql.Composed:
    del owner  # the schema belongs to whoever runs the tool, like flyway_schema_history
    return sql.SQL(
        """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.audit_log (
    seq           bigint PRIMARY KEY,
    recorded_at   timestamptz NOT NULL,
    plan_name     text NOT NULL,
    flow_run_id   text,
    phase         text NOT NULL,
    step          text NOT NULL,
    started_at    timestamptz,
    ended_at      timestamptz,
    actor         text NOT NULL,
    inputs_digest text NOT NULL,
    outcome       text NOT NULL,
    record        jsonb NOT NULL,
    prev_sha256   text NOT NULL,
    sha256        text NOT NULL UNIQUE
);
"""
    ).format(schema=sql.Identifier(HISTORY_SCHEMA))


def insert_audit_record() -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {}.audit_log (seq, recorded_at, plan_name, flow_run_id, phase, step, "
        "started_at, ended_at, actor, inputs_digest, outcome, record, prev_sha256, sha256) "
        "VALUES (%(seq)s, now(), %(plan)s, %(flow_run_id)s, %(phase)s, %(step)s, %(started_at)s, "
        "%(ended_at)s, %(actor)s, %(inputs_digest)s, %(outcome)s, %(record)s, %(prev_sha256)s, "
        "%(sha256)s) ON CONFLICT (seq) DO NOTHING"
    ).format(sql.Identifier(HISTORY_SCHEMA))


def audit_hashes() -> sql.Composed:
    return sql.SQL("SELECT seq, sha256 FROM {}.audit_log ORDER BY seq").format(sql.Identifier(HISTORY_SCHEMA))


HISTORY_TABLE_EXISTS = "SELECT to_regclass('apim_upgrade.audit_log') IS NOT NULL"


def create_role(name: str) -> sql.Composed:
    """A NOLOGIN role to own sandbox copies (the sandbox's stand-in for wso2_apim)."""
    return sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name))
