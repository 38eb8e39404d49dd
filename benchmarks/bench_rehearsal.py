"""Benchmark: the whole rehearsal on the sandbox (stand-in JVM runs included) at several scales.

Per scale: the estate's 'production' nodes running, its deliberately broken APIs
accepted (as an operator does after review), then ``apim-upgrade rehearse PLAN``
against a running ``prefect server`` with ``APIM_STANDIN_SPEED=20``: wall time, peak
RSS of the flow process and of the largest stand-in server, and the time of each
phase from the audit trail. Cost should grow no faster than the data (rows and
bytes of the sources); peak memory should stay flat and under 500 MB.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apim_upgrade.plan import load_plan
from apim_upgrade.proof import audit
from apim_upgrade.rehearsal import derive_rehearsal_plan
from benchmarks.common import Context, Row, run_measured

NAME = "rehearsal"
RSS_LIMIT_MB = 500.0


def bench(ctx: Context, scale: int) -> None:
    from sandbox.create import sandbox_secrets
    from sandbox.demo import accept_invalid_apis
    from sandbox.nodes import start_estate, stop_everything

    estate = ctx.estate(scale)
    plan_path = estate.plan_path
    accept_invalid_apis(plan_path)
    plan = load_plan(plan_path)
    if plan.cutover is None:
        raise SystemExit(f"{plan_path} has no [cutover] nodes: the rehearsal benchmark needs a full sandbox")
    secrets = {**sandbox_secrets(plan_path.parent), "APIM_STANDIN_SPEED": "20"}
    env = ctx.env(extra=secrets)
    saved = {k: os.environ.get(k) for k in secrets}
    os.environ.update(secrets)  # the 'production' nodes read them, as under their service manager
    try:
        start_estate(plan.cutover)
        command = [*ctx.cli(f"{NAME}-{scale}"), "rehearse", str(plan_path)]
        measured = run_measured(command, env, watch_dir=plan_path.parent)
    finally:
        stop_everything(plan_path.parent)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    flow_mb = measured.peak_mb.get("flow", 0.0)
    standin_mb = measured.peak_mb.get("stand-in", 0.0)
    growth = ctx.extras.setdefault(NAME + ":growth", [])
    grows_with_data = True
    if growth:  # against the previous scale: time may grow at most as fast as rows and bytes
        _, rows, size, wall, *_ = growth[-1].split("\t")
        data = min(estate.rows / int(rows), estate.bytes / int(size))
        grows_with_data = measured.seconds / float(wall) <= data
    ctx.rows.append(
        Row(
            NAME,
            scale,
            "-",
            None,
            measured.seconds,
            f"RSS < {RSS_LIMIT_MB:.0f} MB; time grows <= data",
            None,
            met_override=max(flow_mb, standin_mb) < RSS_LIMIT_MB and grows_with_data,
            note=f"flow {flow_mb:.0f} MB, stand-in {standin_mb:.0f} MB",
        )
    )
    phases: dict[str, tuple[datetime, datetime]] = {}
    rehearsal_plan = load_plan(derive_rehearsal_plan(plan))
    for r in audit.read_records(rehearsal_plan.audit_path):
        if r.ended_at is None:
            continue
        first, last = phases.get(r.phase, (r.started_at, r.ended_at))
        phases[r.phase] = (min(first, r.started_at), max(last, r.ended_at))
    ctx.note(
        NAME,
        f"scale {scale}: {measured.seconds:.1f} s; peak RSS flow {flow_mb:.0f} MB, largest stand-in "
        f"{standin_mb:.0f} MB, other {measured.peak_mb.get('other', 0):.0f} MB; phases: "
        + ", ".join(f"{p} {(b - a).total_seconds():.1f}" for p, (a, b) in phases.items()),
    )
    growth.append(f"{scale}\t{estate.rows}\t{estate.bytes}\t{measured.seconds:.2f}\t{flow_mb:.0f}\t{standin_mb:.0f}")


def growth_table(lines: list[str]) -> list[str]:
    """Time per scale next to the data's growth: time should grow no faster than rows/bytes."""
    out = [
        f"{'scale':>5} {'rows':>10} {'MB':>7} {'wall s':>8} {'rows x':>7} {'MB x':>6} {'time x':>7} "
        f"{'s/M rows':>9} {'flow MB':>8} {'stand-in MB':>11}"
    ]
    prev: tuple[int, int, float] | None = None
    for line in lines:
        scale, rows, size, wall, flow, standin = line.split("\t")
        r, b, w = int(rows), int(size), float(wall)
        growth = (
            (f"{r / prev[0]:>7.1f} {b / prev[1]:>6.1f} {w / prev[2]:>7.2f}") if prev else f"{'-':>7} {'-':>6} {'-':>7}"
        )
        out.append(
            f"{scale:>5} {r:>10} {b / 2**20:>7.0f} {w:>8.1f} {growth} {w / r * 1e6:>9.1f} {flow:>8} {standin:>11}"
        )
        prev = (r, b, w)
    return out


if __name__ == "__main__":
    from benchmarks.run_all import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
