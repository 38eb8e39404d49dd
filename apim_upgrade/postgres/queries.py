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

TERMINATE_SESSION = "SELECT pg_terminate_backend(%s)"

DATABASE_SIZE = "SELECT pg_database_size(%s)"

# The cutover window's fence: new sessions on a source are read-only, so a write that would
# land after the copy is refused (never silently left behind); rollback lifts it.
SOURCE_FENCED = """
SELECT EXISTS (
  SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
  WHERE d.datname = %s AND s.setrole = 0 AND 'default_transaction_read_only=on' = ANY(s.setconfig)
)
"""


def fence_database(name: str) -> sql.Composed:
    return sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(name))


def lift_database_fence(name: str) -> sql.Composed:
    return sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(sql.Identifier(name))


# --- database copies ---------------------------------------------------------


def create_database_from_template(target: str, template: str, owner: str, strategy: str | None) -> sql.Composed:
    query = sql.SQL("CREATE DATABASE {} WITH TEMPLATE {} OWNER {}").format(
        sql.Identifier(target), sql.Identifier(template), sql.Identifier(owner)
    )
    if strategy:
        query += sql.SQL(" STRATEGY {}").format(sql.Identifier(strategy.upper()))
    return query


# --- snapshot copies (a live source, read in one exported snapshot) -------------

# The exporting transaction sits idle while pg_dump reads in its snapshot: a server-wide
# idle_in_transaction_session_timeout must not end it (any role may set it for itself).
KEEP_IDLE_TRANSACTION = "SET LOCAL idle_in_transaction_session_timeout = 0"
EXPORT_SNAPSHOT = "SELECT pg_export_snapshot()"
SERVER_VERSION_NUM = "SELECT current_setting('server_version_num')::int"
DATABASE_LOCALE = """
SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s
"""


def create_database_for_restore(
    target: str, owner: str, encoding: str, collate: str, ctype: str, strategy: str | None
) -> sql.Composed:
    """An empty database like the source (owner, encoding, locale) to restore a dump into."""
    query = sql.SQL("CREATE DATABASE {} WITH TEMPLATE template0 OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        sql.Identifier(target), sql.Identifier(owner), sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype)
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


# Constraints a step could drop: primary keys, UNIQUE, foreign keys, CHECK and EXCLUDE
# (NOT NULL is a column property, compared with the column). Also read by schema_diff.
CONSTRAINTS = """
SELECT t.relname, con.conname, pg_get_constraintdef(con.oid)
FROM pg_constraint con
JOIN pg_class t ON t.oid = con.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %s AND con.contype IN ('p', 'u', 'f', 'c', 'x')
  AND t.relkind IN ('r', 'p') AND NOT t.relispartition
ORDER BY t.relname, con.conname
"""

SEQUENCES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind = 'S'
ORDER BY c.relname
"""


def schema_objects(schema: str) -> sql.Composed:
    """Every table, column, index, constraint and sequence of ``schema``, one row each, labelled
    ``kind table.name`` (``table t``, ``sequence s``) as ``catalog.SchemaObject.label`` prints
    them: the "nothing vanished" gate checks its required set against this, live."""
    s = sql.Literal(schema)
    return sql.SQL(
        "SELECT 'table ' || c.relname AS object FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = {s} AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "UNION ALL SELECT 'column ' || table_name || '.' || column_name FROM information_schema.columns "
        "WHERE table_schema = {s} "
        "UNION ALL SELECT 'index ' || tablename || '.' || indexname FROM pg_indexes WHERE schemaname = {s} "
        "UNION ALL SELECT 'constraint ' || t.relname || '.' || con.conname FROM pg_constraint con "
        "JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = {s} AND con.contype IN ('p', 'u', 'f', 'c', 'x') "
        "UNION ALL SELECT 'sequence ' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = {s} AND c.relkind = 'S'"
    ).format(s=s)


def count_rows_union(schema: str, tables: Sequence[str]) -> sql.Composed:
    """One statement counting every table, so all counts share one snapshot."""
    parts = [
        sql.SQL("SELECT {} AS table_name, count(*) AS row_count FROM {}.{}").format(
            sql.Literal(t), sql.Identifier(schema), sql.Identifier(t)
        )
        for t in tables
    ]
    return sql.SQL(" UNION ALL ").join(parts)


# --- cheap per-table facts (incremental gates) -------------------------------------
# What proves a table's row count unchanged between two checkpoints without reading it:
# its storage (relfilenode: TRUNCATE, VACUUM FULL, a rewriting ALTER change it) and its
# cumulative insert/delete counters; valid only within one statistics epoch (same
# database, same server start, no statistics reset, counters tracked).

TABLE_FACTS = """
SELECT c.relname, pg_relation_filenode(c.oid), coalesce(s.n_tup_ins, 0), coalesce(s.n_tup_del, 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""

# This transaction's own inserts and deletes per table (exact, no flush delay: its own pending
# counters), read by the script runner just before COMMIT.
XACT_TABLE_FACTS = """
SELECT c.relname, pg_relation_filenode(c.oid), coalesce(s.n_tup_ins, 0), coalesce(s.n_tup_del, 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_xact_user_tables s ON s.relid = c.oid
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""

STATS_EPOCH = """
SELECT d.oid::bigint, pg_postmaster_start_time(), s.stats_reset, current_setting('track_counts') = 'on'
FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid
WHERE d.datname = current_database()
"""

# Make this session's pending counters visible to others when its transaction ends.
FORCE_STATS_FLUSH = "SELECT pg_stat_force_next_flush()"

# Other client sessions on this database that could hold unflushed counters; this tool's own
# lock holders (they hold an advisory lock of our namespace and write no table) are left out.
UNSETTLED_SESSIONS = """
SELECT a.pid, coalesce(nullif(a.application_name, ''), '(no application name)'), a.state
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
  AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory'
                  AND l.classid = %s::bigint::oid AND l.granted)
ORDER BY a.pid
"""


def row_count_comparison(expected: dict[str, int], actual: dict[str, int]) -> sql.Composed:
    """Expected and actual counts side by side, one row per table (NULL: absent on that side).

    Both sides are exact ``count(*)`` results taken by ``count_rows_union`` in one
    REPEATABLE READ snapshot: the gate validates those very counts instead of counting
    every table again (and GX never pulls table rows out).
    """

    def values(counts: dict[str, int], column: str) -> sql.Composable:
        if not counts:
            return sql.SQL("SELECT NULL::text AS table_name, NULL::bigint AS {} WHERE false").format(
                sql.Identifier(column)
            )
        rows = sql.SQL(", ").join(
            sql.SQL("({}, {}::bigint)").format(sql.Literal(t), sql.Literal(n)) for t, n in sorted(counts.items())
        )
        return sql.SQL("SELECT * FROM (VALUES {}) AS v(table_name, {})").format(rows, sql.Identifier(column))

    return sql.SQL(
        "SELECT coalesce(e.table_name, a.table_name) AS table_name, e.expected_rows, a.actual_rows "
        "FROM ({}) e FULL OUTER JOIN ({}) a USING (table_name)"
    ).format(values(expected, "expected_rows"), values(actual, "actual_rows"))


def index_names(schema: str) -> sql.Composed:
    return sql.SQL("SELECT indexname FROM pg_indexes WHERE schemaname = {}").format(sql.Literal(schema))


# --- apim-upgrade's bookkeeping schema (inside the target API-M database) ---------------
# Created and versioned by apim_upgrade/postgres/bookkeeping.py only. Each migration is
# applied once, in order, and recorded in bookkeeping_version (as alembic_version does).

HISTORY_SCHEMA = "apim_upgrade"

# Migration 1 is the schema the previous releases created table by table on the fly
# (columns exactly as they were); IF NOT EXISTS lets it adopt such a database as it is.
_BOOKKEEPING_V1 = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.bookkeeping_version (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL DEFAULT current_user
);
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
CREATE TABLE IF NOT EXISTS {schema}.completed_steps (
    phase        text NOT NULL,
    step         text NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT now(),
    flow_run_id  text,
    evidence     jsonb NOT NULL DEFAULT '{{}}',
    PRIMARY KEY (phase, step)
);
CREATE TABLE IF NOT EXISTS {schema}.schema_history (
    installed_rank integer PRIMARY KEY,
    from_version   text NOT NULL,
    to_version     text NOT NULL,
    script         text NOT NULL,
    sha256         text NOT NULL,
    statements     integer NOT NULL,
    duration_ms    integer NOT NULL,
    applied_at     timestamptz NOT NULL DEFAULT now(),
    applied_by     text NOT NULL,
    flow_run_id    text,
    rebaselined_from text,
    UNIQUE (from_version, to_version)
);
CREATE TABLE IF NOT EXISTS {schema}.checkpoints (
    phase      text NOT NULL,
    label      text NOT NULL,
    taken_at   timestamptz NOT NULL DEFAULT now(),
    snapshot   jsonb NOT NULL,
    PRIMARY KEY (phase, label)
)"""


def bookkeeping_migrations() -> list[tuple[int, str, sql.Composed]]:
    """(version, description, DDL) in order. Append only: never edit a released migration."""
    schema = sql.Identifier(HISTORY_SCHEMA)
    return [
        (1, "audit_log, completed_steps, schema_history, checkpoints", sql.SQL(_BOOKKEEPING_V1).format(schema=schema)),
    ]


# One catalogue read per writer session: which database this is (its oid changes when a
# copy is dropped and rebuilt under the same name) and whether the schema is versioned yet.
BOOKKEEPING_PROBE = """
SELECT d.oid::bigint, d.datname, to_regclass('apim_upgrade.bookkeeping_version') IS NOT NULL
FROM pg_database d WHERE d.datname = current_database()
"""
# Read after the lock from pg_class itself (this statement's snapshot), not with to_regclass,
# whose name lookup may still answer from this session's cache what it saw before the lock.
BOOKKEEPING_VERSION_TABLE_EXISTS = """
SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'apim_upgrade' AND c.relname = 'bookkeeping_version')
"""
# Held by the transaction that migrates: two first writers on a new copy do not race.
BOOKKEEPING_LOCK = "SELECT pg_advisory_xact_lock(%s, hashtext('apim-upgrade bookkeeping'))"


def bookkeeping_version() -> sql.Composed:
    return sql.SQL("SELECT max(version) FROM {}.bookkeeping_version").format(sql.Identifier(HISTORY_SCHEMA))


def insert_bookkeeping_version() -> sql.Composed:
    return sql.SQL("INSERT INTO {}.bookkeeping_version (version, description) VALUES (%s, %s)").format(
        sql.Identifier(HISTORY_SCHEMA)
    )


def checkpoint_labels() -> sql.Composed:
    return sql.SQL("SELECT phase, label FROM {}.checkpoints ORDER BY phase, label").format(
        sql.Identifier(HISTORY_SCHEMA)
    )


def audit_record_count() -> sql.Composed:
    return sql.SQL("SELECT count(*) FROM {}.audit_log").format(sql.Identifier(HISTORY_SCHEMA))


def audit_records() -> sql.Composed:
    return sql.SQL("SELECT record FROM {}.audit_log ORDER BY seq").format(sql.Identifier(HISTORY_SCHEMA))


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


# --- completed steps (resume truth, inside the target API-M database) ---------------
# Unlike audit_log (a mirror of the whole trail), this table only ever holds steps
# that ran against *this* database: a rebuilt copy starts with it empty.


def upsert_completed_step() -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {}.completed_steps (phase, step, flow_run_id, evidence) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (phase, step) DO UPDATE SET "
        "completed_at = now(), flow_run_id = EXCLUDED.flow_run_id, evidence = EXCLUDED.evidence"
    ).format(sql.Identifier(HISTORY_SCHEMA))


def select_completed_step() -> sql.Composed:
    return sql.SQL(
        "SELECT completed_at, flow_run_id, evidence FROM {}.completed_steps WHERE phase = %s AND step = %s"
    ).format(sql.Identifier(HISTORY_SCHEMA))


# --- schema conformance: catalogue reads for apim_upgrade.postgres.schema_diff --------------
# All four read one schema (``%s``); run them in one snapshot after
# CATALOG_SEARCH_PATH, so regclass defaults such as nextval('x'::regclass) print
# unqualified for sequences of that schema, as they do in a freshly loaded WSO2 DDL.

CATALOG_SEARCH_PATH = "SELECT set_config('search_path', quote_ident(%s), true)"

# format_type gives the declared type with its length ("character varying(255)"),
# which information_schema.columns.data_type drops.
CATALOG_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""

# Key columns in key order (conkey order), not in table order.
CATALOG_PRIMARY_KEYS = """
SELECT c.relname,
       array(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.ord)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND con.contype = 'p'
ORDER BY c.relname
"""

# The quote_ident columns let the caller strip exactly the index name and the schema
# qualifier that pg_get_indexdef prints, however they are quoted.
CATALOG_INDEXES = """
SELECT t.relname, i.relname, pg_get_indexdef(i.oid), quote_ident(i.relname),
       quote_ident(n.nspname), quote_ident(t.relname)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %s AND t.relkind IN ('r', 'p') AND NOT t.relispartition
ORDER BY t.relname, i.relname
"""

CATALOG_SEQUENCES = SEQUENCES


def create_scratch_database(name: str) -> sql.Composed:
    """A clean UTF8 database (template0: nothing added to template1 leaks in)."""
    return sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))


# --- schema upgrade: script history and the per-database advisory lock -----------------

# Advisory locks take two int4 keys: a fixed namespace for this tool, and the
# target database's name hashed, so two runs on the same database collide.
ADVISORY_NAMESPACE = 0x41504D55  # 'APMU'
TRY_ADVISORY_LOCK = "SELECT pg_try_advisory_lock(%s, hashtext(%s))"
ADVISORY_UNLOCK = "SELECT pg_advisory_unlock(%s, hashtext(%s))"
# Held by the transaction that applies a script: a retry after a lost connection (when the
# run's session lock may have gone with the server) still cannot overlap another apply.
TRY_ADVISORY_XACT_LOCK = "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))"
ADVISORY_HOLDER = """
SELECT a.pid, coalesce(nullif(a.application_name, ''), '(no application name)'),
       coalesce(host(a.client_addr), 'local socket'), a.usename, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid
  AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid AND l.objsubid = 2
"""
SET_APPLICATION_NAME = "SELECT set_config('application_name', %s, false)"
PING = "SELECT 1"


def select_schema_history() -> sql.Composed:
    return sql.SQL(
        "SELECT installed_rank, from_version, to_version, script, sha256, statements, duration_ms, applied_at "
        "FROM {}.schema_history ORDER BY installed_rank"
    ).format(sql.Identifier(HISTORY_SCHEMA))


def insert_schema_history() -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {}.schema_history (installed_rank, from_version, to_version, script, sha256, statements, "
        "duration_ms, applied_by, flow_run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    ).format(sql.Identifier(HISTORY_SCHEMA))


def select_schema_history_step() -> sql.Composed:
    return sql.SQL(
        "SELECT installed_rank, from_version, to_version, script, sha256, statements, duration_ms "
        "FROM {}.schema_history WHERE from_version = %s AND to_version = %s"
    ).format(sql.Identifier(HISTORY_SCHEMA))


def rebaseline_schema_history() -> sql.Composed:
    return sql.SQL(
        "UPDATE {}.schema_history SET rebaselined_from = sha256, sha256 = %s, script = %s "
        "WHERE from_version = %s AND to_version = %s"
    ).format(sql.Identifier(HISTORY_SCHEMA))


def set_local_role(role: str) -> sql.Composed:
    return sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role))


# --- checkpoint snapshots (the "before" of a step survives a crash or a failed gate) ------


def insert_checkpoint() -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {}.checkpoints (phase, label, snapshot) VALUES (%s, %s, %s) ON CONFLICT (phase, label) DO NOTHING"
    ).format(sql.Identifier(HISTORY_SCHEMA))


def select_checkpoint() -> sql.Composed:
    return sql.SQL("SELECT snapshot::text FROM {}.checkpoints WHERE phase = %s AND label = %s").format(
        sql.Identifier(HISTORY_SCHEMA)
    )


def latest_checkpoint_of() -> sql.Composed:
    """The newest stored snapshot of one database (the base of the next incremental snapshot)."""
    return sql.SQL(
        "SELECT snapshot::text FROM {}.checkpoints WHERE snapshot->>'database' = %s "
        "ORDER BY (snapshot->>'taken_at')::timestamptz DESC LIMIT 1"
    ).format(sql.Identifier(HISTORY_SCHEMA))


def delete_completed_step() -> sql.Composed:
    return sql.SQL("DELETE FROM {}.completed_steps WHERE phase = %s AND step = %s").format(
        sql.Identifier(HISTORY_SCHEMA)
    )


REHEARSAL_COPIES = "SELECT datname FROM pg_database WHERE datname LIKE ANY(%s)"


def rows_as_text(schema: str, table: str) -> sql.Composed:
    return sql.SQL("SELECT t::text FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))


def columns_checksum(schema: str, table: str, columns: Sequence[str]) -> sql.Composed:
    """Row count and an md5 of the chosen columns of every row, rows sorted by their text (crash proofs)."""
    row = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    return sql.SQL(
        "SELECT count(*), md5(coalesce(string_agg(r, E'\\n' ORDER BY r), ''))"
        " FROM (SELECT ROW({})::text AS r FROM {}.{}) AS rows"
    ).format(row, sql.Identifier(schema), sql.Identifier(table))


def completed_step_names() -> sql.Composed:
    return sql.SQL("SELECT phase, step FROM {}.completed_steps ORDER BY phase, step").format(
        sql.Identifier(HISTORY_SCHEMA)
    )


def schema_history_durable() -> sql.Composed:
    """What a script run leaves for good: order, versions, file, checksum, statement count (not times)."""
    return sql.SQL(
        "SELECT installed_rank, from_version, to_version, script, sha256, statements"
        " FROM {}.schema_history ORDER BY installed_rank"
    ).format(sql.Identifier(HISTORY_SCHEMA))


def checkpoint_snapshots() -> sql.Composed:
    return sql.SQL("SELECT phase, label, snapshot FROM {}.checkpoints ORDER BY phase, label").format(
        sql.Identifier(HISTORY_SCHEMA)
    )
