"""Benchmark: gate time follows what a step changed, not the size of the database (issue 15).

Per scale (``--scales 30 300``: scale 300 is about 4.5 GB of sources), on the sandbox with its
stand-in 4.2.0 pack, each mode side by side:

* ``rehearse PLAN --fresh --until migration-environment`` (the copies and the 4.2.0 home), then
* ``warm``: at once, ``cold``: after ``Context.chill`` (throwaway cluster restarted, OS page cache
  dropped), ``cold-os``: after dropping the OS page cache only,
  ``rehearse PLAN --from identity-migration --until api-migration``: the three JVM phases
  with their gates (``snapshot_targets`` before, ``validate_migration`` / ``validate_unchanged`` after),

and the gate seconds and the rows the gates counted, from the rehearsal's audit trail. The
schema-upgrade benchmark keeps its gate seconds the same way; at the largest scale of the run this
benchmark adds one row per kind and mode: gate time there against the smallest scale (target <= 1.3x).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apim_upgrade.plan import load_plan
from apim_upgrade.rehearsal import derive_rehearsal_plan
from benchmarks.bench_schema_upgrade import chill, modes
from benchmarks.common import Context, Row, run_measured, step_times

NAME = "gates-scale"
JVM_PHASES = {"identity-migration", "api-pre-migration", "api-migration"}
JVM_GATES = {"snapshot_targets", "validate_migration", "validate_unchanged"}
TARGET = 1.3


def bench(ctx: Context, scale: int) -> None:
    from sandbox.create import sandbox_secrets
    from sandbox.demo import accept_invalid_apis

    plan_path = ctx.estate(scale).plan_path
    accept_invalid_apis(plan_path)
    secrets = {**sandbox_secrets(plan_path.parent), "APIM_STANDIN_SPEED": "20"}
    env = ctx.env(extra=secrets)
    audit_path = load_plan(derive_rehearsal_plan(load_plan(plan_path))).audit_path
    saved = {k: os.environ.get(k) for k in secrets}
    os.environ.update(secrets)
    try:
        for mode in modes(ctx):
            cli = [*ctx.cli(f"{NAME}-{mode}-{scale}"), "rehearse", str(plan_path)]
            copies = run_measured([*cli, "--fresh", "--until", "migration-environment"], env)
            chill(ctx, mode)
            started = time.time()
            measured = run_measured([*cli, "--from", "identity-migration", "--until", "api-migration"], env)
            times = step_times(audit_path, since=started - 1)
            gates = times.total(JVM_GATES, JVM_PHASES)
            rows, tables = times.rows(JVM_GATES, JVM_PHASES), times.tables(JVM_GATES, JVM_PHASES)
            ctx.store.setdefault(f"gates:JVM phases:{mode}", {})[scale] = (gates, rows, tables)
            jvm = times.total({"run_api_manager"}, JVM_PHASES)
            per = ", ".join(f"{p} {times.total(JVM_GATES, {p}):.2f}" for p in sorted(JVM_PHASES, key=_order))
            ctx.note(
                NAME,
                f"scale {scale}, {mode}: JVM phases {measured.seconds:.1f} s (JVM runs {jvm:.1f} s), their gates "
                f"{gates:.2f} s ({per}), counted {rows} rows in {tables} table counts; copies + 4.2.0 home "
                f"first: {copies.seconds:.1f} s",
            )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _order(phase: str) -> int:
    return ["identity-migration", "api-pre-migration", "api-migration"].index(phase)


def compare(ctx: Context) -> None:
    """One row per kind of gate and mode: its time at the largest scale against the smallest (run_all, at the end)."""
    for key, by_scale in sorted(ctx.store.items()):
        if not key.startswith("gates:") or len(by_scale) < 2:
            continue
        _, kind, mode = key.split(":")
        small, large = min(by_scale), max(by_scale)
        (s_sec, s_rows, _), (l_sec, l_rows, _) = by_scale[small], by_scale[large]
        ctx.rows.append(
            Row(
                NAME,
                large,
                f"{kind} gates at scale {small}, {mode}",
                s_sec,
                l_sec,
                f"<= {TARGET}x the scale-{small} time",
                TARGET,
                note=f"rows counted {s_rows} -> {l_rows}",
            )
        )


if __name__ == "__main__":
    from benchmarks.run_all import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
