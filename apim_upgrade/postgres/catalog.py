"""Consistent snapshots of a database: exact row counts and its catalogue.

Everything is read in one REPEATABLE READ, READ ONLY transaction, so the
counts of all tables belong to the same instant (no per-table estimates).
A snapshot also names every object it saw (``SchemaObject``: tables, columns,
indexes, constraints, sequences), which is what the "nothing vanished" check compares.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from apim_upgrade.postgres import db, queries

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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(path)  # atomic: a crash never leaves half a snapshot
        return path

    @classmethod
    def load(cls, path: Path) -> Snapshot:
        return cls.model_validate_json(path.read_text())


def take_snapshot(server: db.PgServer, dbname: str, schema: str = "public") -> Snapshot:
    """Read catalogue and exact counts of ``schema`` in one consistent snapshot."""
    with db.snapshot_transaction(server, dbname) as conn:
        return read_snapshot(conn, dbname, schema)


def read_snapshot(conn: db.Connection, dbname: str, schema: str = "public") -> Snapshot:
    """Catalogue and exact counts of ``schema`` as the open REPEATABLE READ transaction on ``conn`` sees them.

    The snapshot copy calls this in the transaction whose snapshot it exported to pg_dump, so the
    counts are those of the copy, whatever the source's clients write meanwhile.
    """
    taken_at = datetime.now(UTC)
    tables = [r[0] for r in db.fetch_all(conn, queries.TABLES, (schema,))]
    counts: dict[str, int] = {}
    if tables:
        rows = db.fetch_all(conn, queries.count_rows_union(schema, tables))
        counts = {str(t): int(n) for t, n in rows}
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
    )
