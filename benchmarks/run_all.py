"""Every benchmark of apim-upgrade against its physical floor, in one run, as one table.

    uv run python benchmarks/run_all.py [--scales 1 10 100] [--only NAME ...] [--reps 2]
                                        [--results benchmarks/RESULTS.md]

Each figure is a ratio against a baseline measured in the same run on identical data
(the same sandbox estate per scale, a Prefect server already running). Benchmarks:
prepare-databases, schema-upgrade, gates, rehearsal, cli-startup. With --results the
table, the extra figures and the machine are written to that Markdown file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (
    bench_cli,
    bench_copy,
    bench_gates,
    bench_gates_scale,
    bench_prepare_databases,
    bench_rehearsal,
    bench_schema_upgrade,
    bench_window,
)
from benchmarks.common import DBSCRIPTS_ROOT, RSS_METHOD, Context, Row, context

BENCHMARKS: dict[str, Callable[[Context, int], None]] = {
    bench_prepare_databases.NAME: bench_prepare_databases.bench,
    bench_copy.NAME: bench_copy.bench,
    bench_schema_upgrade.NAME: bench_schema_upgrade.bench,
    bench_gates.NAME: bench_gates.bench,
    bench_gates_scale.NAME: bench_gates_scale.bench,
    bench_window.NAME: bench_window.bench,
    bench_rehearsal.NAME: bench_rehearsal.bench,
    bench_cli.NAME: bench_cli.bench,
}
NEEDS_DISTRIBUTION = {bench_rehearsal.NAME, bench_gates_scale.NAME, bench_window.NAME}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument(
        "--at",
        nargs="+",
        default=[],
        metavar="NAME=SCALES",
        help="run benchmark NAME only at these scales (comma-separated), e.g. copy=100 gates-scale=30,300",
    )
    parser.add_argument(
        "--cluster",
        choices=["shared", "throwaway"],
        default="shared",
        help="shared: the server on 127.0.0.1:5432 (or APIM_UPGRADE_PG_DSN); throwaway: a cluster of the "
        "run's own, which can be restarted: cold-cache figures need it",
    )
    parser.add_argument("--reps", type=int, default=2, help="repetitions of the prepare-databases comparison")
    parser.add_argument("--results", type=Path, help="write the results (and the machine) to this Markdown file")
    parser.add_argument("--note", default="", help="a line for the results file (e.g. 'taken under load')")
    parser.add_argument(
        "--profile",
        type=Path,
        help="write a pyinstrument report of every measured CLI run here (run with `uv run --with pyinstrument`;"
        " the timings then include the profiler's overhead)",
    )
    args = parser.parse_args(argv)
    for var, value in (("DO_NOT_TRACK", "1"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false")):
        os.environ.setdefault(var, value)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

    at: dict[str, set[int]] = {}
    for item in args.at:
        name, _, scales = item.partition("=")
        if name not in BENCHMARKS or not scales:
            parser.error(f"--at {item}: expected NAME=SCALES with NAME one of {', '.join(BENCHMARKS)}")
        at[name] = {int(x) for x in scales.split(",")}
    only = [n for n in BENCHMARKS if n in at] if at else args.only  # --at replaces --only and --scales
    all_scales = sorted(set().union(*at.values()) if at else set(args.scales))

    signal.signal(signal.SIGTERM, _terminated)  # so the run's cluster, server and sandboxes are removed
    started = time.perf_counter()
    load_before = os.getloadavg()
    genuine = DBSCRIPTS_ROOT / "4.0.0" / "apimgt" / "postgresql.sql"
    with context(
        dbscripts=DBSCRIPTS_ROOT / "4.0.0" if genuine.exists() else None, throwaway=args.cluster == "throwaway"
    ) as ctx:
        ctx.needs_distribution = bool(NEEDS_DISTRIBUTION & set(only))
        ctx.reps = args.reps
        ctx.profile_dir = args.profile
        ctx.scales = all_scales
        for scale in all_scales:
            for name in only:
                if scale not in (at[name] if at else set(args.scales)):
                    continue
                print(f"== {name}, scale {scale}  ({time.strftime('%H:%M:%S')})", flush=True)
                BENCHMARKS[name](ctx, scale)
            ctx.release(scale)
        bench_gates_scale.compare(ctx)
        server_version = ctx.server_version
        if ctx.handle is not None and ctx.handle.throwaway_dir is not None:
            server_version += " (a throwaway cluster started by this run: initdb defaults, fsync off)"
    load_after = os.getloadavg()
    elapsed = time.perf_counter() - started

    table = render_table(ctx.rows)
    extras = render_extras(ctx)
    print("\n" + "\n".join(table) + "\n\n" + "\n".join(extras))
    if args.results:
        command = "uv run python benchmarks/run_all.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        args.results.write_text(
            render_markdown(ctx, table, extras, command, server_version, load_before, load_after, elapsed, args.note)
        )
        print(f"\nresults written to {args.results}")
    return 0


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(f"terminated (signal {signum})")


def render_table(rows: list[Row]) -> list[str]:
    head = f"{'benchmark':<18} {'scale':>5} {'baseline':<28} {'baseline s':>10} {'apim-upgrade s':>14} "
    head += f"{'ratio':>7} {'target':<34} {'met?':<4}  note"
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(
            f"{r.benchmark:<18} {r.scale if r.scale else '-':>5} {r.baseline:<28} "
            f"{f'{r.baseline_s:.3f}' if r.baseline_s is not None else '-':>10} {r.measured_s:>14.3f} "
            f"{f'{r.ratio:.2f}x' if r.ratio is not None else '-':>7} {r.target:<34} "
            f"{'-' if r.met is None else 'yes' if r.met else 'NO':<4}  {r.note}"
        )
    return out


def render_extras(ctx: Context) -> list[str]:
    out: list[str] = []
    for key, lines in ctx.extras.items():
        if key == bench_rehearsal.NAME + ":growth":
            out += ["rehearsal: cost and peak memory against the data", *bench_rehearsal.growth_table(lines), ""]
            continue
        out += [f"{key}:", *(f"  {line}" for line in lines), ""]
    out += [*_fixed_vs_per_row(ctx), "", RSS_METHOD]
    return out


def _fixed_vs_per_row(ctx: Context) -> list[str]:
    """Least-squares split of each benchmark's cost over its floor: fixed seconds + seconds per million rows."""
    out = ["overhead over the floor = fixed + per-row cost (least squares over the scales run; rows of the sources):"]
    for name in (bench_prepare_databases.NAME, bench_schema_upgrade.NAME, bench_gates.NAME):
        points = [
            (ctx.sizes[r.scale][0] / 1e6, r.measured_s - (r.baseline_s or 0.0))
            for r in ctx.rows
            if r.benchmark == name and r.scale in ctx.sizes
        ]
        if len(points) < 2:
            continue
        n = len(points)
        mx = sum(x for x, _ in points) / n
        my = sum(y for _, y in points) / n
        sxx = sum((x - mx) ** 2 for x, _ in points)
        slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
        out.append(f"  {name:<18} fixed {my - slope * mx:6.2f} s + {slope:6.2f} s per million rows")
    return out


def machine() -> list[str]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout
        except OSError:
            return ""

    cpu = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in run("lscpu").splitlines())}
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line), "0")
    disk = " ".join(run("df", "-h", "--output=source,fstype,size,avail", "/var/lib/postgresql").split("\n")[1:2])
    versions = ", ".join(
        f"{p} {metadata.version(p)}" for p in ("prefect", "great-expectations", "psycopg", "sqlalchemy")
    )
    return [
        f"- CPU: {cpu.get('Model name', platform.processor())}, {cpu.get('CPU(s)', os.cpu_count())} CPU(s) "
        f"({cpu.get('Thread(s) per core', '?')} thread(s) per core)",
        f"- memory: {int(mem) / 2**20:.1f} GiB",
        f"- disk (PostgreSQL data): {disk or 'n/a'}",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}; {versions}",
    ]


def render_markdown(
    ctx: Context,
    table: list[str],
    extras: list[str],
    command: str,
    server_version: str,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    elapsed: float,
    note: str,
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    unmet = sorted({r.benchmark for r in ctx.rows if r.met is False})
    lines = [
        "# Benchmarks: apim-upgrade against the physical floor",
        "",
        f"Generated by `{command}` on {when} ({elapsed / 60:.0f} min). Regenerate the same way;",
        "every ratio is against a baseline measured in the same run on the same sandbox data.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- PostgreSQL: {server_version}",
        f"- load average (1/5/15 min): {' / '.join(f'{x:.1f}' for x in load_before)} before, "
        f"{' / '.join(f'{x:.1f}' for x in load_after)} after",
        *([f"- {note}"] if note else []),
        *(f"- mode `{mode}`: {how}" for mode, how in ctx.cold_methods.items()),
        "",
        "## Results",
        "",
        "```",
        *table,
        "```",
        "",
        "```",
        *extras,
        "```",
        "",
    ]
    lines += ["## Before this round of work", "", *(f"- {b}" for b in BEFORE), ""]
    if unmet:
        lines += ["## Targets not met: where the time goes", ""]
        for name in unmet:
            lines += [f"### {name}", "", EXPLANATIONS.get(name, "(no explanation recorded)"), ""]
    return "\n".join(lines)


# Why a target can be missed and what would cut it; the figures above say how much.
EXPLANATIONS = {
    bench_prepare_databases.NAME: (
        "The phase's cost over `createdb -T` is almost all fixed seconds (the least-squares split above puts "
        "the per-row term within noise): a CLI rerun over verified copies already takes a few seconds with a "
        "running server (see 'prepare-databases:fixed'), spent importing Python, Prefect (~2 s) and the "
        "flows (~1 s) and running the preflight and copy-check tasks through Prefect's engine (API round "
        "trips). What copying adds on top of `createdb -T`: one exact snapshot of each source and of each "
        "copy (each table counted once, in one REPEATABLE READ transaction), the registry indexes, one GX "
        "gate per copy (GX's import, ~3.5 s of CPU, runs in a background thread while the server copies) "
        "and the Data Docs, built once at the end of the phase. The ratio falls as the copy grows; to reach "
        "1.3x the fixed part must shrink to about a third of the copy time. What would cut it further: "
        "fewer Prefect task round trips for the checks (one task for the whole preflight), and GX's import "
        "kept out of processes that only rerun verified copies."
    ),
    bench_schema_upgrade.NAME: (
        "The sandbox's stand-in vendor scripts are DDL only: `psql` needs a fraction of a second at every "
        "scale, so 1.5x psql leaves no room for any proof. With the incremental gates nothing in the phase "
        "grows with the data any more (the gates count the few tables a script names; 'counted 0 rows' "
        "above): phase - fixed is the history and lock bookkeeping around each script (its transaction also "
        "reads pg_stat_xact_user_tables), one incremental snapshot per script, and GX: validate_script "
        "validates and renders a change gate per script whose required-column expectation lists every "
        "column of the new version's DDL (~2,000), and check_conformance compares the whole catalogue with "
        "the 4.4.0 DDL. These are seconds, fixed, and CPU-bound (they moved with the machine's load, not "
        "with the scale). The fixed part outside every step (interpreter, Prefect and GX imports, the "
        "engine's API round trips, the report) is reported apart. What would cut it: the column and "
        "survival checks as one SQL query per gate with GX validating its result (a few rows) instead of "
        "one expectation over ~2,000 columns, and the per-script gate rendered once per phase."
    ),
    bench_gates.NAME: (
        "A checkpoint counts each table exactly once, like the baseline, so the per-row cost is the "
        "floor's; the difference is fixed, a few tenths of a second: the catalogue read in the same "
        "transaction (columns from information_schema, indexes) and GX's validation of the counts (a "
        "VALUES list: no table is read again). The ratio therefore falls with scale (see the scales "
        "above). What would cut the fixed part: the catalogue from pg_catalog instead of information_schema."
    ),
    bench_window.NAME: (
        "The floors (template copy, the stand-in JVM runs, psql of the scripts, 4.4.0's start-up) are what "
        "any tool must wait for; the rest of the window is proof and orchestration: the GX gates of every "
        "step (the copy gate, validate_migration / validate_unchanged after each JVM run, validate_script "
        "per script and the conformance check: seconds each, fixed, whatever the data), the incremental "
        "snapshots around them (a second or so each), and Prefect between the audited steps (a subflow per "
        "phase, a task run per step: see 'between audited steps'). See the breakdown above: 'inside the "
        "window, by phase' and 'longest steps'."
    ),
    bench_gates_scale.NAME: (
        "Gate time at the large scale against the small one: the incremental gates count only the tables a "
        "step may have changed (see 'counted ... rows'); what remains is fixed (GX validation and rendering, "
        "catalogue reads). In the 'cold' mode the cluster was restarted between the copies and the gates: "
        "a restart starts a new statistics epoch (counters may be lost across it), so the first gate after it "
        "counts every table once, by design; 'cold-os' drops only the OS page cache."
    ),
    bench_copy.NAME: (
        "The snapshot copy is pg_dump --snapshot -j + pg_restore -j under the hood plus the exact counts of "
        "the exported snapshot; against pgcopydb (which streams COPY between the servers without a dump on "
        "disk) the difference is the dump written and read back."
    ),
    bench_rehearsal.NAME: (
        "Either peak memory crossed the limit (see the per-process figures: the flow process holds "
        "Prefect and GX with pandas and scipy) or the time grew faster than the data between two scales "
        "(see the growth table; at small scales noise from other load can do that)."
    ),
    bench_cli.NAME: (
        "`--help` imports only the CLI, the error module and argparse; above 1 s means the interpreter "
        "itself is slow to start on this machine (compare the bare interpreter figure)."
    ),
}

# The same benchmarks before this round of work (same machine, also under load), for comparison.
BEFORE = [
    "prepare-databases: scale 10 createdb -T 0.92 s vs phase 21.3 s (23x); scale 50 3.04 s vs 13.6 s; a verified "
    "rerun 5.7 s with a running server, +10.4 s in Prefect's embedded mode",
    "schema-upgrade: psql 0.12 s vs phase 14-17 s, of which gates 9-13 s",
    "gates: the GX row-count gate counted every table again inside its own query (on top of the snapshot's "
    "count), a new GX context per gate, Data Docs rebuilt once per validation result",
    "report: charts drawn with matplotlib after every run (~2.3 s); reference catalogues loaded into a scratch "
    "database once per version and work directory (~2 s each)",
]


if __name__ == "__main__":
    sys.exit(main())
