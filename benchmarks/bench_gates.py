"""Benchmark: one full row-count checkpoint against a bare ``count(*)`` of every table.

On the estate's API-M database (the larger one), in this process:

* baseline    ``SELECT count(*)`` of every table, in one REPEATABLE READ transaction
              (one UNION ALL statement over the live table list),
* checkpoint  what a gate does: ``take_snapshot`` (exact counts of every table and the
              catalogue, in one REPEATABLE READ transaction) and the GX row-count gate on
              those counts (``build_change_gate`` + ``run_gate``: expectations, validation
              results, Data Docs),

median of 3 after one warm-up; the first (cold) checkpoint of a process, which pays
GX's import and its file context, is reported separately.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db, queries
from apim_upgrade.postgres.catalog import take_snapshot
from apim_upgrade.proof.gates import run_gate
from benchmarks.common import Context, Row
from expectations.migration_gate import build_change_gate

NAME = "gates"
REPS = 3


def bench(ctx: Context, scale: int) -> None:
    plan = load_plan(ctx.estate(scale).plan_path)
    pair = plan.databases.apim
    database, schema = pair.source, pair.db_schema
    gx_root = ctx.work / f"gates-{scale}" / "gx"
    with db.session(ctx.server, database, read_only=True) as conn:
        tables = [r[0] for r in db.fetch_all(conn, queries.TABLES, (schema,))]

    def bare() -> float:
        start = time.perf_counter()
        with db.snapshot_transaction(ctx.server, database) as conn:
            db.fetch_all(conn, queries.count_rows_union(schema, tables))
        return time.perf_counter() - start

    before = take_snapshot(ctx.server, database, schema)

    def checkpoint() -> float:
        start = time.perf_counter()
        after = take_snapshot(ctx.server, database, schema)
        result = run_gate(gx_root, ctx.server, build_change_gate("bench-row-counts", database, before, after))
        if not result.success:
            raise SystemExit(f"the row-count gate failed on an unchanged database: {result.failures}")
        return time.perf_counter() - start

    cold = checkpoint()
    bare()  # warm the server's buffers the same way for both
    floors = [bare() for _ in range(REPS)]
    gates = [checkpoint() for _ in range(REPS)]
    floor, gate = statistics.median(floors), statistics.median(gates)
    ctx.rows.append(Row(NAME, scale, f"count(*) x {len(tables)} tables, 1 txn", floor, gate, "<= 2x", 2.0))
    first = " (includes GX's import and context: once per process)" if not ctx.extras.get(NAME) else ""
    ctx.note(
        NAME,
        f"scale {scale}: {len(tables)} tables, {before.total_rows} rows: bare count {floor:.3f} s, "
        f"checkpoint {gate:.3f} s (snapshot + GX), first checkpoint of the process {cold:.2f} s{first}",
    )


if __name__ == "__main__":
    from benchmarks.run_all import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
