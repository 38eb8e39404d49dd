"""Benchmark: the prepare-databases phase against a bare ``createdb -T`` of the same sources.

Runs, at two (or more) scales, side by side on identical sources:

* baseline  ``createdb -T <source> <copy>`` for both databases (the physical floor),
* phase     ``apim-upgrade run PLAN --phase prepare-databases`` against a real
            ``prefect server`` that is already running (as in production),

and prints wall time, ratio and peak memory (max RSS of the process). The CLI's
fixed start-up cost in embedded mode (Prefect's ephemeral API) is reported on
its own line. Usage::

    uv run python benchmarks/bench_prepare_databases.py [--scales 10 50] [--dbscripts DIR] [--reps 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apim_upgrade import db, queries  # noqa: E402
from apim_upgrade.pgserver import find_server  # noqa: E402
from apim_upgrade.plan import load_plan  # noqa: E402
from sandbox.create import create_sandbox, destroy_sandbox  # noqa: E402
from sandbox.prefect_server import start_prefect_server, stop_prefect_server  # noqa: E402

DEFAULT_DBSCRIPTS = next(
    (p for p in (ROOT.parent / "shared/wso2/dbscripts/4.0.0", Path("/work/shared/wso2/dbscripts/4.0.0")) if p.is_dir()),
    ROOT.parent / "shared/wso2/dbscripts/4.0.0",
)


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(args[:4])} failed: {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def drop_targets(server: db.PgServer, plan_path: Path) -> None:
    plan = load_plan(plan_path)
    with db.session(server, "postgres", autocommit=True) as conn:
        for pair in plan.databases.roles().values():
            db.execute(conn, queries.drop_database(pair.target))
    shutil.rmtree(plan.work_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--dbscripts", type=Path, default=DEFAULT_DBSCRIPTS if DEFAULT_DBSCRIPTS.exists() else None)
    args = parser.parse_args()

    handle = find_server()
    server = handle.server
    work = Path(tempfile.mkdtemp(prefix="apim-bench-"))
    port = 4300 + os.getpid() % 500
    prefect = start_prefect_server(work / "prefect-home", port)
    base_env = dict(
        os.environ,
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        GX_ANALYTICS_ENABLED="False",
        PREFECT_HOME=str(work / "prefect-home"),
    )
    server_env = dict(base_env, PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    embedded_env = {k: v for k, v in base_env.items() if k != "PREFECT_API_URL"}
    cli = [sys.executable, "-m", "apim_upgrade.cli"]
    pg_args = ["-h", server.host, "-p", str(server.port), "-U", server.user]
    rows = []
    fixed_cost = None
    try:
        for scale in args.scales:
            t0 = time.perf_counter()
            plan_path, summary = create_sandbox(
                work / f"scale{scale}", server, scale=scale, dbscripts=args.dbscripts, with_distribution=False
            )
            build = time.perf_counter() - t0
            plan = load_plan(plan_path)
            with db.session(server, "postgres", read_only=True) as conn:
                sizes = db.fetch_all(
                    conn, queries.DATABASE_INFO, ([p.source for p in plan.databases.roles().values()],)
                )
            size_mb = sum(int(r[1]) for r in sizes) / 2**20
            base_t, base_m, phase_t, phase_m = [], [], [], []
            for _ in range(args.reps):
                wall = mem = 0.0
                for pair in plan.databases.roles().values():
                    w, m = timed(["createdb", *pg_args, "-T", pair.source, pair.target], base_env)
                    wall, mem = wall + w, max(mem, m)
                base_t.append(wall)
                base_m.append(mem)
                drop_targets(server, plan_path)
                w, m = timed([*cli, "run", str(plan_path), "--phase", "prepare-databases"], server_env)
                phase_t.append(w)
                phase_m.append(m)
                if fixed_cost is None:
                    # Copies verified: a rerun only checks and skips, so what remains is fixed cost.
                    rerun = [*cli, "run", str(plan_path), "--phase", "prepare-databases"]
                    skip_server, _ = timed(rerun, server_env)
                    skip_embedded, _ = timed(rerun, embedded_env)
                    fixed_cost = (skip_server, skip_embedded)
                drop_targets(server, plan_path)
            rows.append(
                (
                    scale,
                    summary.access_tokens,
                    size_mb,
                    build,
                    statistics.median(base_t),
                    statistics.median(phase_t),
                    max(base_m),
                    max(phase_m),
                )
            )
            destroy_sandbox(plan_path)
    finally:
        stop_prefect_server(prefect)
        handle.stop()
        shutil.rmtree(work, ignore_errors=True)

    schema = f"dbscripts {args.dbscripts}" if args.dbscripts else "compact sandbox schema"
    print(f"\nprepare-databases vs createdb -T  ({schema}; median of {args.reps}; prefect server running)")
    print(
        f"{'scale':>5} {'tokens':>9} {'src MB':>7} {'createdb -T s':>13} {'phase s':>8} {'ratio':>6} "
        f"{'phase-overhead s':>16} {'createdb RSS MB':>15} {'phase RSS MB':>12}"
    )
    for scale, tokens, size, _build, base, phase, bm, pm in rows:
        print(
            f"{scale:>5} {tokens:>9} {size:>7.0f} {base:>13.2f} {phase:>8.2f} {phase / base:>6.1f} "
            f"{phase - base:>16.2f} {bm:>15.0f} {pm:>12.0f}"
        )
    if fixed_cost:
        s, e = fixed_cost
        print(
            f"CLI fixed start-up (verified rerun): {s:.2f} s with a running server, "
            f"{e:.2f} s in embedded mode (embedded API start-up adds {e - s:.2f} s)"
        )


if __name__ == "__main__":
    main()
