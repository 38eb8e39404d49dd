"""Benchmark: the schema-upgrade phase against plain ``psql -1 -f`` of the same scripts, warm and cold.

On identical copies of the estate brought to the 4.2.0 schema (the API-M copy carrying the
checkpoint api-migration's gate would leave: the first gate's incremental base), side by side:

* baseline  ``psql -v ON_ERROR_STOP=1 -1 -f`` of the 4.2.0->4.3.0 and 4.3.0->4.4.0 scripts,
* phase     ``apim-upgrade run PLAN --phase schema-upgrade`` (history, locks, gates,
            conformance) against a running ``prefect server``,

each side ``warm`` (the copies were just written: in the page cache) and, on a cluster the
benchmark started itself (``--cluster throwaway``), ``cold``: the cluster restarted and the OS page
cache dropped before each side, and ``cold-os``: the OS page cache dropped only (``Context.chill``;
a restart costs the incremental gates their statistics epoch, so ``cold`` counts every table once).
The phase's wall time is split from its audit trail into the scripts, the gates (snapshots, GX
validations, history and conformance checks) and the fixed cost outside every audited step
(interpreter, imports, Prefect's engine and API round trips, the report), which is reported apart:
the target is phase - fixed <= 1.5x psql. The gate seconds are kept per scale for ``gates-scale``
(gate time at the largest scale vs the smallest).
Run alone with ``uv run python benchmarks/bench_schema_upgrade.py [--scales 30 300] [--cluster throwaway]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import history
from apim_upgrade.postgres.catalog import take_snapshot
from benchmarks.common import DBSCRIPTS_ROOT, Context, Row, drop_targets, run_measured, step_times
from sandbox.estate import drop_estate
from sandbox.schema_sync import copy_at_version, generate_upgrade_script

NAME = "schema-upgrade"
GATE_STEPS = {"snapshot_target", "validate_script", "check_conformance", "check_script_history"}
STEPS = (("4.2.0", "4.3.0"), ("4.3.0", "4.4.0"))


def _scripts(ctx: Context) -> list[tuple[str, str, Path]]:
    """The stand-in vendor scripts, generated once per run from the versions' DDL."""
    out = []
    for old, new in STEPS:
        path = ctx.work / f"{old}-{new}.sql"
        if not path.exists():
            generate_upgrade_script(
                ctx.server,
                DBSCRIPTS_ROOT / old / "apimgt/postgresql.sql",
                DBSCRIPTS_ROOT / new / "apimgt/postgresql.sql",
                path,
                title=f"{old} -> {new}",
            )
        out.append((old, new, path))
    return out


def modes(ctx: Context) -> list[str]:
    """warm; cold: cluster restarted + OS page cache dropped; cold-os: OS page cache dropped only."""
    if ctx.handle is not None and ctx.handle.throwaway_dir is not None:
        return ["warm", "cold", "cold-os"]
    return ["warm"]


def chill(ctx: Context, mode: str) -> None:
    if mode != "warm":
        ctx.chill(restart=mode == "cold")


def bench(ctx: Context, scale: int) -> None:
    scripts = _scripts(ctx)
    section = {
        "schema_upgrade": {
            "scripts": [
                {"from_version": a, "to_version": b, "path": str(p), "dbscripts": str(DBSCRIPTS_ROOT / b)}
                for a, b, p in scripts
            ],
            "target_dbscripts": str(DBSCRIPTS_ROOT / "4.4.0"),
        }
    }
    if "cold" not in modes(ctx):
        ctx.note(NAME, "cold caches not measured: the server is shared (run with --cluster throwaway)")
    for mode in modes(ctx):
        _one(ctx, scale, mode, section, scripts)


def _one(ctx: Context, scale: int, mode: str, section: dict[str, Any], scripts: list[tuple[str, str, Path]]) -> None:
    plan_path = ctx.derived_plan(scale, f"{NAME}-{mode}", section)
    plan = load_plan(plan_path)
    apim, shared = plan.databases.apim, plan.databases.shared
    floor_db = f"{apim.target}_floor"
    try:
        ddl = DBSCRIPTS_ROOT / "4.2.0"
        for target in (apim.target, floor_db):
            copy_at_version(ctx.server, apim.source, target, apim.owner, ddl / "apimgt/postgresql.sql")
        copy_at_version(ctx.server, shared.source, shared.target, shared.owner, ddl / "postgresql.sql")
        # What api-migration's gate leaves in a real run: its 'after' checkpoint, the incremental base.
        history.checkpoint(
            ctx.server, apim.target, "api-migration", "after-apim", lambda: take_snapshot(ctx.server, apim.target)
        )
        pg_args = ["-h", ctx.server.host, "-p", str(ctx.server.port), "-U", ctx.server.user]
        chill(ctx, mode)
        floor = 0.0
        for _, _, p in scripts:
            psql = ["psql", *pg_args, "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(p), floor_db]
            floor += run_measured(psql, ctx.env()).seconds
        chill(ctx, mode)
        started = time.time()
        measured = run_measured([*ctx.cli(f"{NAME}-{mode}-{scale}"), "run", str(plan_path), "--phase", NAME], ctx.env())
    finally:
        drop_estate(ctx.server, floor_db)
    times = step_times(plan.audit_path, since=started - 1)
    phase = measured.seconds
    inside = times.total(phases={NAME})
    fixed = phase - inside
    gates = times.total(GATE_STEPS, {NAME})
    applied = times.total({"apply_sql_script"}, {NAME})
    ctx.store.setdefault(f"gates:{NAME}:{mode}", {})[scale] = (gates, times.rows(GATE_STEPS), times.tables(GATE_STEPS))
    ctx.rows.append(
        Row(
            NAME,
            scale,
            f"psql -1 -f (both scripts), {mode}",
            floor,
            phase - fixed,
            "phase - fixed <= 1.5x psql",
            1.5,
            note=f"phase {phase:.2f} s, fixed {fixed:.2f} s",
        )
    )
    per_step = ", ".join(f"{s} {v:.2f}" for (_, s), v in sorted(times.seconds.items()) if s in GATE_STEPS)
    other = inside - applied - gates
    ctx.note(
        NAME,
        f"scale {scale}, {mode}: psql {floor:.2f} s; phase {phase:.2f} s = scripts {applied:.2f} s + gates "
        f"{gates:.2f} s ({per_step}; counted {times.rows(GATE_STEPS)} rows in {times.tables(GATE_STEPS)} "
        f"table counts) + other steps {other:.2f} s + fixed {fixed:.2f} s (outside every audited step: "
        f"interpreter, imports, Prefect engine and API, report); flow peak RSS "
        f"{measured.peak_mb.get('flow', 0):.0f} MB",
    )
    drop_targets(ctx, plan_path)


if __name__ == "__main__":
    from benchmarks.run_all import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
