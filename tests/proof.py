"""The end state of an upgraded estate, as a comparable fingerprint (crash and concurrency proofs).

``end_state(server, plan)`` reads both copies of a plan: their catalogue (tables, columns
with types, nullability and defaults, primary keys, indexes, sequences), every table's exact
row count, a checksum of the rows of the key tables (computed in PostgreSQL: nothing is
loaded here) and the durable content of apim-upgrade's own bookkeeping (steps completed,
scripts applied with their checksums, checkpoint contents), never times or run ids.
``differences(a, b)`` lists what differs, one line per difference. Two estates built by
the sandbox generator at the same scale and upgraded to the end have equal fingerprints,
whatever their database names and however many times their runs crashed.
"""

from __future__ import annotations

import json
from typing import Any

from apim_upgrade.plan import Plan
from apim_upgrade.postgres import bookkeeping, db, queries
from apim_upgrade.postgres.catalog import take_snapshot
from apim_upgrade.postgres.schema_diff import read_catalog

# The tables whose rows must be equal, per database role (names as in the DDL; matched
# case-insensitively so WSO2's own upper-case DDL works too).
KEY_TABLES = {
    "apim": ("AM_API", "AM_APPLICATION", "AM_SUBSCRIPTION", "IDN_OAUTH2_ACCESS_TOKEN"),
    "shared": ("REG_RESOURCE", "REG_CONTENT", "REG_PATH"),
}
# Columns that legitimately differ between two runs of the same upgrade (lower-case names).
# Each entry says why; nothing else may be left out.
VOLATILE_COLUMNS: dict[str, set[str]] = {}
# apim-upgrade's own tables: compared by durable content below, the audit log not at all
# (its records carry times and run ids; `apim-upgrade audit verify --plan` checks it instead).
BOOKKEEPING = {"bookkeeping_version", "audit_log", "completed_steps", "schema_history", "checkpoints"}


def end_state(server: db.PgServer, plan: Plan) -> dict[str, Any]:
    """The fingerprint of both copies of ``plan`` (JSON-able, keyed by role and aspect)."""
    state: dict[str, Any] = {}
    for role, pair in plan.databases.roles().items():
        catalog = read_catalog(server, pair.target, pair.db_schema)
        state[f"{role}.catalog"] = catalog.model_dump(mode="json", exclude={"database"})
        state[f"{role}.rows"] = take_snapshot(server, pair.target, pair.db_schema).row_counts
        by_lower = {name.lower(): name for name in catalog.tables}
        with db.session(server, pair.target, read_only=True) as conn:
            for wanted in KEY_TABLES[role]:
                table = by_lower.get(wanted.lower())
                if table is None:
                    state[f"{role}.checksum.{wanted}"] = "absent"
                    continue
                skip = VOLATILE_COLUMNS.get(table.lower(), set())
                columns = [c for c in catalog.tables[table].columns if c.lower() not in skip]
                count, digest = db.fetch_one(conn, queries.columns_checksum(pair.db_schema, table, columns)) or (0, "")
                state[f"{role}.checksum.{table}"] = {"rows": count, "md5": digest, "columns": columns}
            state.update(_bookkeeping(conn, role))
    return state


def source_fingerprint(server: db.PgServer, plan: Plan) -> dict[str, Any]:
    """Both sources of ``plan``: a checksum of every row of every table, the catalogue, and the
    database's comment and owner (not its size on disk, which autovacuum may change)."""
    prints: dict[str, Any] = {}
    for pair in plan.databases.roles().values():
        catalog = read_catalog(server, pair.source, pair.db_schema)
        prints[f"{pair.source}.catalog"] = catalog.model_dump(mode="json")
        with db.session(server, pair.source, read_only=True) as conn:
            for name, table in sorted(catalog.tables.items()):
                checksum = queries.columns_checksum(pair.db_schema, name, list(table.columns))
                count, digest = db.fetch_one(conn, checksum) or (0, "")
                prints[f"{pair.source}.rows.{name}"] = {"rows": count, "md5": digest}
            info = db.fetch_all(conn, queries.DATABASE_INFO, ([pair.source],))
            prints[f"{pair.source}.database"] = [[name, comment, owner] for name, _, comment, owner in info]
    return prints


def _bookkeeping(conn: db.Connection, role: str) -> dict[str, Any]:
    tables = {str(t) for (t,) in db.fetch_all(conn, queries.TABLES, (queries.HISTORY_SCHEMA,))}
    found: dict[str, Any] = {
        f"{role}.bookkeeping.tables": sorted(tables),
        f"{role}.bookkeeping.version": bookkeeping.present(conn).version,
    }
    if "completed_steps" in tables:
        found[f"{role}.bookkeeping.completed_steps"] = [
            list(r) for r in db.fetch_all(conn, queries.completed_step_names())
        ]
    if "schema_history" in tables:
        found[f"{role}.bookkeeping.schema_history"] = [
            list(r) for r in db.fetch_all(conn, queries.schema_history_durable())
        ]
    if "checkpoints" in tables:
        # What was stored before each step's first attempt: counts and structure, not when or where.
        found[f"{role}.bookkeeping.checkpoints"] = [
            [phase, label, {k: snap[k] for k in ("row_counts", "columns", "indexes")}]
            for phase, label, snap in db.fetch_all(conn, queries.checkpoint_snapshots())
        ]
    unknown = tables - BOOKKEEPING
    if unknown:  # a new bookkeeping table: compare its size until this helper learns its durable content
        snap = take_snapshot_counts(conn, sorted(unknown))
        found[f"{role}.bookkeeping.other_rows"] = snap
    return found


def take_snapshot_counts(conn: db.Connection, tables: list[str]) -> dict[str, int]:
    rows = db.fetch_all(conn, queries.count_rows_union(queries.HISTORY_SCHEMA, tables))
    return {str(t): int(n) for t, n in rows}


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """One line per aspect that differs (empty when the end states are the same)."""
    lines = []
    for key in sorted(set(expected) | set(actual)):
        a, b = expected.get(key), actual.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            detail = "; ".join(f"{k}: {_short(a.get(k))} != {_short(b.get(k))}" for k in keys[:8])
            lines.append(f"{key}: {detail}")
        else:
            lines.append(f"{key}: {_short(a)} != {_short(b)}")
    return lines


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
