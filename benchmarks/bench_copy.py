"""Benchmark: the snapshot copy against the plain tools, on the same sources in the same run.

For both databases of the estate (their times summed), median of ``--reps``:

* snapshot  apim_upgrade's snapshot copy (``postgres/snapshot_copy.py``): exact counts and
            catalogue in the exported snapshot, ``pg_dump -Fd -j 2 --snapshot``, CREATE DATABASE,
            ``pg_restore -j 2``,
* plain     ``pg_dump -Fd -j 2`` (its default compression) + ``createdb -T template0`` +
            ``pg_restore -j 2``: what an operator would type,
* template  ``createdb -T <source>`` (the physical floor; needs an idle source),
* pgcopydb  ``pgcopydb clone --table-jobs 2 --index-jobs 2`` when it is installed (Debian packages it).

Every side but the template copy runs on a live source: a session held open on each source and a
writer inserting into the API-M source every 20 ms (``common.Writer``). Target (issue 14): the
snapshot copy <= 1.2x the faster of the two tools at scale 100.

Run alone with ``uv run python benchmarks/bench_copy.py [--scales 10]``
(the same as ``run_all.py --only copy``).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apim_upgrade.plan import load_plan
from apim_upgrade.plan.sections import DatabasePair
from apim_upgrade.postgres import db, snapshot_copy
from benchmarks.common import Context, Row, Writer, drop_targets, run_measured, target_at

NAME = "copy"
JOBS = 2
TARGET = 1.2


def bench(ctx: Context, scale: int) -> None:
    plan_path = ctx.derived_plan(scale, NAME)
    plan = load_plan(plan_path)
    pairs = list(plan.databases.roles().values())
    server = ctx.server
    major = snapshot_copy.server_major(server, "postgres")
    pg_dump, pg_restore = (snapshot_copy.client_tool(n, major) for n in ("pg_dump", "pg_restore"))
    env = server.tool_environment(ctx.env())
    pg_args = ["-h", server.host, "-p", str(server.port), "-U", server.user]
    pgcopydb = shutil.which("pgcopydb")
    times: dict[str, list[float]] = {"snapshot": [], "plain": [], "template": [], "pgcopydb": []}
    scratch = Path(tempfile.mkdtemp(prefix="bench-copy-", dir=ctx.work))
    pgcopydb_failed: str | None = None
    writes = 0

    for _ in range(ctx.reps):
        wall = 0.0
        for pair in pairs:
            wall += run_measured(["createdb", *pg_args, "-T", pair.source, pair.target], env).seconds
        times["template"].append(wall)
        drop_targets(ctx, plan_path)

        live = _live(ctx, pairs)  # from here on production is live: sessions open, writes going on
        wall = 0.0
        for pair in pairs:
            dump = scratch / "plain"
            shutil.rmtree(dump, ignore_errors=True)
            wall += run_measured(
                [str(pg_dump), *pg_args, "-Fd", f"-j{JOBS}", "--no-sync", "-f", str(dump), pair.source], env
            ).seconds
            wall += run_measured(["createdb", *pg_args, "-T", "template0", "-O", pair.owner, pair.target], env).seconds
            wall += run_measured([str(pg_restore), *pg_args, f"-j{JOBS}", "-d", pair.target, str(dump)], env).seconds
            shutil.rmtree(dump, ignore_errors=True)
        times["plain"].append(wall)
        drop_targets(ctx, plan_path)

        wall = 0.0
        try:
            for pair in pairs:
                start = time.perf_counter()
                snapshot_copy.create_snapshot_copy(
                    server,
                    "postgres",
                    source=pair.source,
                    target=pair.target,
                    owner=pair.owner,
                    schema=pair.db_schema,
                    strategy=None,
                    jobs=JOBS,
                    dump_dir=scratch / "snapshot",
                    copying_marker="bench",
                )
                wall += time.perf_counter() - start
        except BaseException:
            _end(live)
            raise
        times["snapshot"].append(wall)
        drop_targets(ctx, plan_path)

        if pgcopydb and pgcopydb_failed is None:
            wall = 0.0
            try:
                wall = _pgcopydb(ctx, pgcopydb, pairs, pg_args, env, scratch / "pgcopydb")
            except SystemExit as exc:  # run_measured fails loudly; one tool's failure is a note, not the end
                pgcopydb_failed = str(exc).splitlines()[0]
            else:
                times["pgcopydb"].append(wall)
            drop_targets(ctx, plan_path)
        writes += _end(live)
    shutil.rmtree(scratch, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    snap = med["snapshot"]
    tools = {"plain": f"pg_dump -Fd -j{JOBS} + pg_restore -j{JOBS}", "pgcopydb": f"pgcopydb clone, {JOBS} jobs"}
    fastest = min((k for k in tools if k in med), key=lambda k: med[k])
    for key, label in tools.items():
        if key in med:
            goal = target_at(scale, TARGET) if key == fastest else None
            target = f"<= {TARGET}x the faster tool at scale 100" if key == fastest else "(reported)"
            ctx.rows.append(Row(NAME, scale, f"{label} (live)", med[key], snap, target, goal))
    ctx.rows.append(Row(NAME, scale, "createdb -T (idle source only)", med["template"], snap, "(reported)", None))
    ctx.note(
        NAME,
        f"scale {scale}: every side but createdb -T ran on a live source: a session held open on each source "
        f"and a writer inserting into the API-M source every 20 ms ({writes} writes acknowledged in all)",
    )
    if pgcopydb is None or pgcopydb_failed:
        ctx.note(NAME, f"pgcopydb: {pgcopydb_failed or 'not installed (apt-get install pgcopydb)'}")
    line = ", ".join(f"{k} {v:.2f} s" for k, v in med.items())
    ratios = ", ".join(f"snapshot/{k} {snap / v:.2f}x" for k, v in med.items() if k != "snapshot")
    ctx.note(NAME, f"scale {scale}, median of {ctx.reps}: {line}; {ratios}")
    print(f"  {line}\n  {ratios}", flush=True)


def _live(ctx: Context, pairs: list[DatabasePair]) -> tuple[list[Any], Writer]:
    """Production: a session held open on each source and a writer on the API-M one."""
    sessions = [db.connect(ctx.server, p.source, autocommit=True, application_name="bench production") for p in pairs]
    writer = Writer(ctx.server, pairs[0].source)
    writer.start()
    return sessions, writer


def _end(live: tuple[list[Any], Writer]) -> int:
    sessions, writer = live
    acknowledged = writer.stop()
    for conn in sessions:
        conn.close()
    if writer.failed:
        raise SystemExit(f"the production writer failed: {writer.failed}")
    return acknowledged


def _pgcopydb(
    ctx: Context, pgcopydb: str, pairs: list[DatabasePair], pg_args: list[str], env: dict[str, str], work: Path
) -> float:
    wall = 0.0
    for pair in pairs:
        shutil.rmtree(work, ignore_errors=True)
        wall += run_measured(["createdb", *pg_args, "-T", "template0", "-O", pair.owner, pair.target], env).seconds
        clone = [
            pgcopydb,
            "clone",
            f"--source={ctx.server.tool_conninfo(pair.source)}",
            f"--target={ctx.server.tool_conninfo(pair.target)}",
            f"--table-jobs={JOBS}",
            f"--index-jobs={JOBS}",
            f"--dir={work}",
        ]
        wall += run_measured(clone, env).seconds
        shutil.rmtree(work, ignore_errors=True)
    return wall


if __name__ == "__main__":
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from benchmarks.run_all import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
