"""Benchmark: the prepare-databases phase against a bare ``createdb -T`` of the same sources.

On identical sources, in the same run:

* baseline  ``createdb -T <source> <copy>`` for both databases (the physical floor),
* phase     ``apim-upgrade run PLAN --phase prepare-databases`` (snapshots, copies, registry
            indexes, GX gates, audit) against a ``prefect server`` that is already running,

median of ``--reps``. The fixed start-up cost is measured on a rerun over verified
copies (which only checks and skips): with the running server and in embedded mode,
through the CLI (its own lean embedded API) and as a bare flow call (Prefect's own).
Run alone with ``uv run python benchmarks/bench_prepare_databases.py [--scales 10 50]``
(the same as ``run_all.py --only prepare-databases``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apim_upgrade.plan import load_plan
from benchmarks.common import Context, Row, drop_targets, run_measured, target_at

NAME = "prepare-databases"


def bench(ctx: Context, scale: int) -> None:
    plan_path = ctx.derived_plan(scale, NAME)
    plan = load_plan(plan_path)
    pg_args = ["-h", ctx.server.host, "-p", str(ctx.server.port), "-U", ctx.server.user]
    args = ["run", str(plan_path), "--phase", NAME]
    phase_cmd = [*ctx.cli(f"{NAME}-{scale}"), *args]
    floors, phases, rss = [], [], 0.0
    for _ in range(ctx.reps):
        wall = 0.0
        for pair in plan.databases.roles().values():
            wall += run_measured(["createdb", *pg_args, "-T", pair.source, pair.target], ctx.env()).seconds
        floors.append(wall)
        drop_targets(ctx, plan_path)
        measured = run_measured(phase_cmd, ctx.env())
        phases.append(measured.seconds)
        rss = max(rss, measured.peak_mb.get("flow", 0.0))
        if len(phases) < ctx.reps:
            drop_targets(ctx, plan_path)
    floors.sort()
    phases.sort()
    floor, phase = floors[len(floors) // 2], phases[len(phases) // 2]
    goal = target_at(scale, 1.3)
    ctx.rows.append(Row(NAME, scale, "createdb -T (both DBs)", floor, phase, "<= 1.3x at scale 100", goal))
    ctx.note(
        NAME,
        f"scale {scale}: createdb -T {floor:.2f} s, phase {phase:.2f} s (runs {', '.join(f'{p:.1f}' for p in phases)}),"
        f" overhead {phase - floor:.2f} s; flow peak RSS {rss:.0f} MB",
    )
    if NAME + ":fixed" not in ctx.extras:
        _fixed_costs(ctx, plan_path, args)
    drop_targets(ctx, plan_path)


def _fixed_costs(ctx: Context, plan_path: Path, args: list[str]) -> None:
    """Reruns over verified copies (they only check and skip): what remains is fixed cost.

    The CLI (apim_upgrade/runtime/embedded_api.py starts its own lean embedded API) and, for comparison,
    the bare flow call, whose embedded mode is Prefect's own (the client starts the API on first use).
    """
    cli = [*ctx.cli(f"{NAME}-rerun"), *args]
    bare = [sys.executable, "-c", BARE_FLOW_CALL, str(plan_path)]
    server, embedded = run_measured(cli, ctx.env()), run_measured(cli, ctx.env(embedded=True))
    bare_server, bare_embedded = run_measured(bare, ctx.env()), run_measured(bare, ctx.env(embedded=True))
    ours, stock = embedded.seconds - server.seconds, bare_embedded.seconds - bare_server.seconds
    ctx.extras[NAME + ":fixed"] = [
        f"CLI rerun over verified copies (fixed cost: Prefect, tasks, audit, report): {server.seconds:.2f} s with"
        f" a running server, {embedded.seconds:.2f} s in embedded mode: embedded API start-up +{ours:.2f} s"
        f" (its server {embedded.peak_mb.get('embedded API', 0):.0f} MB RSS; flow process"
        f" {embedded.peak_mb.get('flow', 0):.0f} MB vs {server.peak_mb.get('flow', 0):.0f} MB with a server)",
        f"same rerun as a bare flow call with Prefect's own embedded mode: +{stock:.2f} s"
        f" ({bare_server.seconds:.2f} s -> {bare_embedded.seconds:.2f} s; flow process"
        f" {bare_embedded.peak_mb.get('flow', 0):.0f} MB, its server in-tree"
        f" {bare_embedded.peak_mb.get('embedded API', 0):.0f} MB)",
    ]


# The phase without the CLI around it (no embedded_api, no report): Prefect's own embedded mode.
BARE_FLOW_CALL = (
    "import sys; from apim_upgrade.plan import load_plan; from flows.phases import run_phase; "
    "run_phase('prepare-databases', load_plan(sys.argv[1]))"
)


if __name__ == "__main__":
    from benchmarks.run_all import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
