"""Consistent snapshots of a database: exact row counts and its catalogue.

Everything is read in one REPEATABLE READ, READ ONLY transaction, so the
counts of all tables belong to the same instant (no per-table estimates).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from apim_upgrade.postgres import db, queries


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


class Snapshot(BaseModel):
    """Row counts and catalogue of one schema, taken at one instant."""

    database: str
    db_schema: str
    taken_at: datetime
    row_counts: dict[str, int]
    columns: dict[str, list[Column]]
    indexes: list[Index]

    @property
    def tables(self) -> list[str]:
        return sorted(self.row_counts)

    @property
    def total_rows(self) -> int:
        return sum(self.row_counts.values())

    def catalog_digest(self) -> str:
        """SHA-256 of the structure (tables, columns, indexes), not of the data."""
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
    return Snapshot(
        database=dbname,
        db_schema=schema,
        taken_at=taken_at,
        row_counts=counts,
        columns=columns,
        indexes=indexes,
    )
