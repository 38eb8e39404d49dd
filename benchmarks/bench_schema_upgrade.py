"""Benchmark: the schema-upgrade phase against plain ``psql -1 -f`` of the same scripts.

On identical copies of the estate brought to the 4.2.0 schema, in the same run:

* baseline  ``psql -v ON_ERROR_STOP=1 -1 -f`` of the 4.2.0->4.3.0 and 4.3.0->4.4.0 scripts,
* phase     ``apim-upgrade run PLAN --phase schema-upgrade`` (history, locks, gates,
            conformance) against a running ``prefect server``,

and the share of the phase spent in its gates (snapshots, GX validations, history
checks and the conformance check, from the audit trail's step times). Run alone with
``uv run python benchmarks/bench_schema_upgrade.py [--scales 10 50]``
(the same as ``run_all.py --only schema-upgrade``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apim_upgrade.plan import load_plan
from apim_upgrade.proof import audit
from benchmarks.common import DBSCRIPTS_ROOT, Context, Row, drop_targets, run_measured, target_at
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
    plan_path = ctx.derived_plan(scale, NAME, section)
    plan = load_plan(plan_path)
    apim, shared = plan.databases.apim, plan.databases.shared
    floor_db = f"{apim.target}_floor"
    try:
        ddl = DBSCRIPTS_ROOT / "4.2.0"
        for target in (apim.target, floor_db):
            copy_at_version(ctx.server, apim.source, target, apim.owner, ddl / "apimgt/postgresql.sql")
        copy_at_version(ctx.server, shared.source, shared.target, shared.owner, ddl / "postgresql.sql")
        pg_args = ["-h", ctx.server.host, "-p", str(ctx.server.port), "-U", ctx.server.user]
        floor = sum(
            run_measured(
                ["psql", *pg_args, "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(p), floor_db], ctx.env()
            ).seconds
            for _, _, p in scripts
        )
        measured = run_measured([*ctx.cli(f"{NAME}-{scale}"), "run", str(plan_path), "--phase", NAME], ctx.env())
    finally:
        drop_estate(ctx.server, floor_db)
    seconds: dict[str, float] = {}
    for r in audit.read_records(plan.audit_path):
        if r.ended_at:
            seconds[r.step] = seconds.get(r.step, 0.0) + (r.ended_at - r.started_at).total_seconds()
    gates = sum(v for k, v in seconds.items() if k in GATE_STEPS)
    applied = seconds.get("apply_sql_script", 0.0)
    phase = measured.seconds
    goal = target_at(scale, 1.5)
    ctx.rows.append(Row(NAME, scale, "psql -1 -f (both scripts)", floor, phase, "<= 1.5x at scale 100", goal))
    ctx.note(
        NAME,
        f"scale {scale}: psql {floor:.2f} s, phase {phase:.2f} s = scripts {applied:.2f} s + gates {gates:.2f} s "
        f"({100 * gates / phase:.0f}% of the phase: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(seconds.items()) if k in GATE_STEPS)
        + f") + the rest {phase - applied - gates:.2f} s (CLI, Prefect, report); flow peak RSS "
        f"{measured.peak_mb.get('flow', 0):.0f} MB",
    )
    drop_targets(ctx, plan_path)


if __name__ == "__main__":
    from benchmarks.run_all import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
