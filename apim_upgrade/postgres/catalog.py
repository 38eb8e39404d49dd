"""Consistent snapshots of a database: exact row counts and its catalogue.

Everything is read in one REPEATABLE READ, READ ONLY transaction, so the
counts of all tables belong to the same instant (no per-table estimates).
A snapshot also names every object it saw (``SchemaObject``: tables, columns,
indexes, constraints, sequences), which is what the "nothing vanished" check compares.

Incremental snapshots (``take_snapshot(..., base=previous)``) keep the counts exact while
counting only what may have changed: a table whose storage (relfilenode) and cumulative
insert/delete counters are those of ``base``, in the same statistics epoch (same database
oid, same server start, no statistics reset, counters tracked) and with no other session
left that could hold unflushed counters, cannot have changed its row count; its count is
carried from ``base``. Every other table is counted. The snapshot records which tables it
counted, which it carried and why (``counted``, ``proven``, ``count_reasons``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from apim_upgrade.postgres import db, queries
from apim_upgrade.runtime.atomic import write_atomically

OBJECT_KINDS = ("table", "column", "index", "constraint", "sequence")


@dataclass(frozen=True, order=True)
class SchemaObject:
    """One named object of a schema: ``kind`` is one of OBJECT_KINDS; ``table`` is "" for sequences
    and ``name`` is "" for tables."""

    kind: str
    table: str
    name: str

    def key(self) -> str:
        """The plan's key, like a conformance key: ``column:am_api.x_custom``, ``table:x``, ``sequence:s``."""
        return f"{self.kind}:{self._path()}"

    def label(self) -> str:
        """As gates and reports name it: ``column am_api.x_custom``."""
        return f"{self.kind} {self._path()}"

    def _path(self) -> str:
        if not self.table:
            return self.name
        return self.table if not self.name else f"{self.table}.{self.name}"

    @classmethod
    def parse_key(cls, key: str) -> SchemaObject:
        """``kind:table.name`` (``table:t``, ``sequence:s``) back to an object; ValueError if malformed."""
        kind, sep, path = key.partition(":")
        if not sep or kind not in OBJECT_KINDS or not path:
            raise ValueError(
                f"{key!r} is not an object key: write kind:table.name with kind one of "
                f"{', '.join(OBJECT_KINDS)} (table:x_table, column:am_api.x_custom, sequence:x_seq)"
            )
        if kind == "sequence":
            return cls(kind, "", path)
        table, dot, name = path.partition(".")
        if kind == "table" and dot:
            raise ValueError(f"{key!r}: a table key names only the table (table:{table})")
        if kind != "table" and not (dot and table and name):
            raise ValueError(f"{key!r}: a {kind} key names its table and itself ({kind}:table.name)")
        return cls(kind, table, name)


class Column(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    data_type: str
    size: int | None
    nullable: bool
    default: str | None


class Index(BaseModel):
    model_config = ConfigDict(frozen=True)
    table: str
    name: str
    definition: str


class Constraint(BaseModel):
    model_config = ConfigDict(frozen=True)
    table: str
    name: str
    definition: str  # pg_get_constraintdef: "PRIMARY KEY (api_id)", "FOREIGN KEY (...) REFERENCES ..."


class TableFacts(BaseModel):
    """What moves when a table's rows can have changed: its storage file and its cumulative
    insert/delete counters (``pg_stat_user_tables``). ``filenode`` None: no storage (partitioned)."""

    model_config = ConfigDict(frozen=True)
    filenode: int | None
    ins: int
    dels: int


class StatsEpoch(BaseModel):
    """Counters are comparable only within one epoch: same database (a rebuilt copy has a new oid),
    same server start (counters restart), no reset (``stats_reset``), counters tracked."""

    model_config = ConfigDict(frozen=True)
    database_oid: int
    server_started: datetime
    stats_reset: datetime | None
    track_counts: bool


class Snapshot(BaseModel):
    """Row counts and catalogue of one schema, taken at one instant."""

    database: str
    db_schema: str
    taken_at: datetime
    row_counts: dict[str, int]
    columns: dict[str, list[Column]]
    indexes: list[Index]
    # Older snapshots (stored checkpoints) lack these two: read as "none seen".
    constraints: list[Constraint] = []
    sequences: list[str] = []
    # Incremental gates (absent in older checkpoints: then nothing can be proven from them).
    facts: dict[str, TableFacts] = {}
    epoch: StatsEpoch | None = None
    counted: list[str] | None = None  # tables counted by this snapshot; None: all of them
    proven: dict[str, str] = {}  # table -> how its count was proven equal to the base's
    count_reasons: dict[str, str] = {}  # table -> why it had to be counted
    base_digest: str | None = None  # digest of the snapshot the proven counts were carried from

    def counting_record(self) -> dict[str, object]:
        """What a gate's audit record says about this snapshot's counts."""
        counted = self.tables if self.counted is None else self.counted
        return {
            "tables": len(self.row_counts),
            "total_rows": self.total_rows,  # the report's row totals carry on through every checkpoint
            "counted_tables": counted,
            "counted_rows": sum(self.row_counts.get(t, 0) for t in counted),
            "count_reasons": self.count_reasons,
            "proven_unchanged": self.proven,
            "base_digest": self.base_digest,
        }

    def objects(self) -> set[SchemaObject]:
        """Every table, column, index, constraint and sequence the snapshot saw."""
        out = {SchemaObject("table", t, "") for t in self.row_counts}
        out |= {SchemaObject("column", t, c.name) for t, cols in self.columns.items() for c in cols}
        out |= {SchemaObject("index", i.table, i.name) for i in self.indexes}
        out |= {SchemaObject("constraint", c.table, c.name) for c in self.constraints}
        out |= {SchemaObject("sequence", "", s) for s in self.sequences}
        return out

    @property
    def tables(self) -> list[str]:
        return sorted(self.row_counts)

    @property
    def total_rows(self) -> int:
        return sum(self.row_counts.values())

    def catalog_digest(self) -> str:
        """SHA-256 of the structure (tables, columns, indexes), not of the data.

        Constraints and sequences are left out on purpose: digests stored by earlier runs (copy
        markers, source snapshots) stay comparable; the "nothing vanished" check covers them."""
        body = json.dumps(
            {
                "columns": {t: [c.model_dump() for c in cols] for t, cols in self.columns.items()},
                "indexes": [i.model_dump() for i in self.indexes],
            },
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()

    def digest(self) -> str:
        """SHA-256 of structure and exact row counts: equal digests, equal state."""
        body = json.dumps({"catalog": self.catalog_digest(), "rows": self.row_counts}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def save(self, path: Path) -> Path:
        return write_atomically(path, self.model_dump_json(indent=1))  # a crash never leaves half a snapshot

    @classmethod
    def load(cls, path: Path) -> Snapshot:
        return cls.model_validate_json(path.read_text())


# How long an incremental snapshot waits for other sessions on the database to end (their
# counters are flushed when they end), and the grace after the last one went: a backend leaves
# pg_stat_activity just before its exit flush, so the flush is given this long to land.
SETTLE_SECONDS = 10.0
EXIT_GRACE_SECONDS = 0.5


def take_snapshot(
    server: db.PgServer,
    dbname: str,
    schema: str = "public",
    *,
    base: Snapshot | None = None,
    must_count: Iterable[str] = (),
) -> Snapshot:
    """Read catalogue and exact counts of ``schema`` in one consistent snapshot.

    With ``base`` (an earlier snapshot of the same database): count only the tables that cannot
    be proven unchanged since ``base`` (see the module docstring) and those in ``must_count``;
    carry the others' counts from ``base``. The facts are read *before* the counting snapshot,
    so a change landing in between is either counted now or seen by the next gate.
    """
    facts: dict[str, TableFacts] = {}
    epoch: StatsEpoch | None = None
    unsettled = ""
    with db.session(server, dbname, read_only=True, activity="reading table facts") as conn:
        if base is not None:
            unsettled = _settle(conn)
        epoch, facts = read_facts(conn, schema)
        conn.commit()
    with db.snapshot_transaction(server, dbname) as conn:
        snap = read_snapshot(
            conn, dbname, schema, base=base, facts=facts, epoch=epoch, must_count=must_count, unsettled=unsettled
        )
    return snap


def read_facts(conn: db.Connection, schema: str) -> tuple[StatsEpoch, dict[str, TableFacts]]:
    """The statistics epoch and every table's storage and cumulative counters (no row is read)."""
    row = db.fetch_one(conn, queries.STATS_EPOCH)
    assert row is not None
    epoch = StatsEpoch(database_oid=row[0], server_started=row[1], stats_reset=row[2], track_counts=row[3])
    facts = {
        str(t): TableFacts(filenode=f, ins=int(i), dels=int(d))
        for t, f, i, d in db.fetch_all(conn, queries.TABLE_FACTS, (schema,))
    }
    return epoch, facts


def _settle(conn: db.Connection) -> str:
    """Wait for other sessions on the database to end (their counters may not be flushed yet).

    "" when none is left (after a short grace for the last one's exit flush); otherwise who
    is still there: then nothing is proven from counters and every table is counted.
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    waited = False
    while True:
        others = db.fetch_all(conn, queries.UNSETTLED_SESSIONS, (queries.ADVISORY_NAMESPACE,))
        conn.commit()
        if not others:
            break
        if time.monotonic() >= deadline:
            return "; ".join(f"pid {pid} '{app}' ({state})" for pid, app, state in others)
        waited = True
        time.sleep(0.1)
    if waited:
        time.sleep(EXIT_GRACE_SECONDS)
    return ""


def plan_counts(
    base: Snapshot | None,
    tables: list[str],
    facts: dict[str, TableFacts],
    epoch: StatsEpoch | None,
    must_count: Iterable[str] = (),
    unsettled: str = "",
) -> tuple[dict[str, str], dict[str, str]]:
    """(tables to count -> why, tables proven unchanged -> how). Pure: the whole decision."""
    if base is None:
        return {t: "no earlier snapshot" for t in tables}, {}
    everything = ""
    if unsettled:
        everything = f"other sessions still connected, their counters may be unflushed: {unsettled}"
    elif epoch is None or base.epoch is None:
        everything = "no statistics epoch recorded"
    elif not epoch.track_counts or not base.epoch.track_counts:
        everything = "track_counts is off: counters do not move"
    elif epoch.database_oid != base.epoch.database_oid:
        everything = "a different database (rebuilt copy)"
    elif epoch.server_started != base.epoch.server_started:
        everything = "the server restarted since (counters may be lost)"
    elif epoch.stats_reset != base.epoch.stats_reset:
        everything = "statistics were reset since"
    if everything:
        return {t: everything for t in tables}, {}
    forced = set(must_count)
    count: dict[str, str] = {}
    proven: dict[str, str] = {}
    for t in tables:
        now, then = facts.get(t), base.facts.get(t)
        if t in forced:
            count[t] = "named by the step"
        elif t not in base.row_counts or then is None:
            count[t] = "not in the earlier snapshot"
        elif now is None:
            count[t] = "no facts read"
        elif now.filenode is None:
            count[t] = "no storage of its own (partitioned)"
        elif now.filenode != then.filenode:
            count[t] = f"storage rewritten (relfilenode {then.filenode} -> {now.filenode})"
        elif (now.ins, now.dels) != (then.ins, then.dels):
            count[t] = f"rows inserted {now.ins - then.ins}, deleted {now.dels - then.dels}"
        else:
            proven[t] = f"relfilenode {now.filenode}, inserts {now.ins}, deletes {now.dels} unchanged, same epoch"
    return count, proven


def read_snapshot(
    conn: db.Connection,
    dbname: str,
    schema: str = "public",
    *,
    base: Snapshot | None = None,
    facts: dict[str, TableFacts] | None = None,
    epoch: StatsEpoch | None = None,
    must_count: Iterable[str] = (),
    unsettled: str = "",
) -> Snapshot:
    """Catalogue and exact counts of ``schema`` as the open REPEATABLE READ transaction on ``conn`` sees them.

    The snapshot copy calls this in the transaction whose snapshot it exported to pg_dump, so the
    counts are those of the copy, whatever the source's clients write meanwhile.
    """
    taken_at = datetime.now(UTC)
    tables = [r[0] for r in db.fetch_all(conn, queries.TABLES, (schema,))]
    count, proven = plan_counts(base, tables, facts or {}, epoch, must_count, unsettled)
    counts: dict[str, int] = {}
    to_count = [t for t in tables if t in count]
    if to_count:
        rows = db.fetch_all(conn, queries.count_rows_union(schema, to_count))
        counts = {str(t): int(n) for t, n in rows}
    if base is not None:
        counts.update({t: base.row_counts[t] for t in proven})
    counts = dict(sorted(counts.items()))
    columns: dict[str, list[Column]] = {t: [] for t in tables}
    for table, name, dtype, size, nullable, default in db.fetch_all(conn, queries.COLUMNS, (schema,)):
        if table in columns:  # views are not tables
            columns[table].append(Column(name=name, data_type=dtype, size=size, nullable=nullable, default=default))
    indexes = [Index(table=t, name=n, definition=d) for t, n, d in db.fetch_all(conn, queries.INDEXES, (schema,))]
    constraints = [
        Constraint(table=t, name=n, definition=d) for t, n, d in db.fetch_all(conn, queries.CONSTRAINTS, (schema,))
    ]
    sequences = [str(r[0]) for r in db.fetch_all(conn, queries.SEQUENCES, (schema,))]
    return Snapshot(
        database=dbname,
        db_schema=schema,
        taken_at=taken_at,
        row_counts=counts,
        columns=columns,
        indexes=indexes,
        constraints=constraints,
        sequences=sequences,
        facts=facts or {},
        epoch=epoch,
        counted=None if base is None else to_count,
        proven=proven,
        count_reasons=count if base is not None else {},
        base_digest=base.digest() if base is not None else None,
    )
