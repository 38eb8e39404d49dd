"""Benchmark: the cutover window against the sum of the floors of what must be inside it (issue 14).

On the sandbox with its stand-in packs and nodes (4.0.0 control plane with its JDBC pools and the
gateways running, ``APIM_STANDIN_SPEED=20``, unattended approval):

* window  ``apim-upgrade run PLAN`` (a cutover): 4.0.0 stopped -> 4.4.0 healthy, as the audit
          trail measures it (``window_measured``),
* floors  measured in the same run on the same data, after the cutover:
          ``createdb -T`` of both sources (the template copy),
          the stand-in JVM runs (identity, pre-migration, API: each process from start to exit, as
          the process wrapper timed it inside the window: what any tool must wait for),
          ``psql -v ON_ERROR_STOP=1 -1 -f`` of the plan's scripts on a copy at the 4.2.0 schema,
          the 4.4.0 control plane's start-up (its start command until its health URL answers,
          polled every 0.05 s, after stopping it again).

Target <= 1.2x; the rest is broken down by phase and step from the audit trail (what the window
holds besides the floors: gates, checks, Prefect between the steps).
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db
from apim_upgrade.proof import audit
from apim_upgrade.runtime import process
from apim_upgrade.wso2 import nodes
from apim_upgrade.wso2.distribution import ddl_file
from benchmarks.common import Context, Row, run_measured, target_at
from sandbox.estate import drop_estate
from sandbox.schema_sync import copy_at_version

NAME = "window"
TARGET = 1.2


def _edit(plan_path: Path, section: str, **values: Any) -> None:
    doc = tomllib.loads(plan_path.read_text())
    doc[section].update(values)
    plan_path.write_text(tomli_w.dumps(doc))


def bench(ctx: Context, scale: int) -> None:
    from sandbox.create import sandbox_secrets
    from sandbox.demo import accept_invalid_apis
    from sandbox.nodes import start_estate, stop_everything

    plan_path = ctx.estate(scale).plan_path
    accept_invalid_apis(plan_path)
    _edit(plan_path, "cutover", unattended=True, session_wait_seconds=120)
    plan = load_plan(plan_path)
    if plan.cutover is None or plan.schema_upgrade is None:
        raise SystemExit(f"{plan_path} is not a full sandbox (no [cutover] or [schema_upgrade])")
    secrets = {**sandbox_secrets(plan_path.parent), "APIM_STANDIN_SPEED": "20"}
    saved = {k: os.environ.get(k) for k in secrets}
    os.environ.update(secrets)  # the nodes read them, as under their service manager
    try:
        start_estate(plan.cutover)
        measured = run_measured([*ctx.cli(f"{NAME}-{scale}"), "run", str(plan_path)], ctx.env(extra=secrets))
        records = [r for r in audit.read_records(plan.audit_path) if r.ended_at is not None]
        window = next(r for r in reversed(records) if r.step == "window_measured").details
        floors = _floors(ctx, plan_path, records)
    finally:
        stop_everything(plan_path.parent)
        _unfence(ctx, plan_path)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = float(window["window_s"])
    floor = sum(floors.values())
    ctx.rows.append(
        Row(
            NAME,
            scale,
            "sum of the floors inside it",
            floor,
            seconds,
            f"<= {TARGET}x at scale 100",
            target_at(scale, TARGET),
            note=f"whole cutover run {measured.seconds:.0f} s",
        )
    )
    ctx.note(
        NAME,
        f"scale {scale}: window {seconds:.1f} s (4.0.0 stopped {window['stopped_400_at']} -> 4.4.0 healthy "
        f"{window['healthy_440_at']}); floors {floor:.1f} s = " + ", ".join(f"{k} {v:.1f}" for k, v in floors.items()),
    )
    for line in _inside(records, window["stopped_400_at"], window["healthy_440_at"], floors):
        ctx.note(NAME, line)


def _floors(ctx: Context, plan_path: Path, records: list[audit.AuditRecord]) -> dict[str, float]:
    plan = load_plan(plan_path)
    assert plan.cutover is not None and plan.schema_upgrade is not None
    env = ctx.env()
    pg_args = ["-h", ctx.server.host, "-p", str(ctx.server.port), "-U", ctx.server.user]
    out: dict[str, float] = {}
    names = [f"{p.source}_floor" for p in plan.databases.roles().values()]
    try:
        out["createdb -T (both DBs)"] = sum(
            run_measured(["createdb", *pg_args, "-T", p.source, name], env).seconds
            for p, name in zip(plan.databases.roles().values(), names, strict=True)
        )
    finally:
        drop_estate(ctx.server, *names)
    out["stand-in JVM runs"] = sum(
        float(r.details.get("seconds") or 0.0) for r in records if r.step == "run_api_manager"
    )
    apim = plan.databases.apim
    floor_db = f"{apim.target}_floor"
    su = plan.schema_upgrade
    ddl = Path(su.target_dbscripts).parent / su.start_version  # the sandbox keeps each version's DDL side by side
    try:
        copy_at_version(ctx.server, apim.source, floor_db, apim.owner, ddl_file(ddl, "apim"))
        out["psql -1 -f (scripts)"] = sum(
            run_measured(
                ["psql", *pg_args, "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(s.path), floor_db], env
            ).seconds
            for s in su.scripts
        )
    finally:
        drop_estate(ctx.server, floor_db)
    cp440 = plan.cutover.control_plane_440[0]
    nodes.stop_node(cp440, 120)
    start = time.perf_counter()
    process.run(cp440.start, timeout=120)
    nodes.wait_until_healthy(cp440.health_url, 120, 0.05, cp440.expect_version)
    out["4.4.0 start-up"] = time.perf_counter() - start
    return out


def _inside(records: list[audit.AuditRecord], opened: str, closed: str, floors: dict[str, float]) -> list[str]:
    """Where the window's time goes: its phases and their longest steps, and the gaps between steps."""
    start, end = datetime.fromisoformat(opened), datetime.fromisoformat(closed)
    inside = [r for r in records if r.ended_at is not None and r.started_at >= start and r.started_at <= end]
    by_phase: dict[str, float] = {}
    by_step: dict[tuple[str, str], float] = {}
    for r in inside:
        assert r.ended_at is not None
        d = (min(r.ended_at, end) - r.started_at).total_seconds()
        by_phase[r.phase] = by_phase.get(r.phase, 0.0) + d
        by_step[(r.phase, r.step)] = by_step.get((r.phase, r.step), 0.0) + d
    total = (end - start).total_seconds()
    in_steps = sum(by_phase.values())
    top = sorted(by_step.items(), key=lambda kv: -kv[1])[:14]
    return [
        "  inside the window, by phase (audited steps): "
        + ", ".join(f"{p} {v:.1f}" for p, v in sorted(by_phase.items(), key=lambda kv: -kv[1])),
        "  longest steps: " + ", ".join(f"{p}/{s} {v:.1f}" for (p, s), v in top),
        f"  between audited steps (Prefect task and flow runs, imports, phase start-up): {total - in_steps:.1f} s"
        f" of {total:.1f} s; over the floors: {total - sum(floors.values()):.1f} s",
    ]


def _unfence(ctx: Context, plan_path: Path) -> None:
    """Lift the window's read-only fence on the sources (the sandbox is dropped afterwards anyway)."""
    plan = load_plan(plan_path)
    with db.session(ctx.server, "postgres", autocommit=True) as conn:
        for pair in plan.databases.roles().values():
            db.execute(conn, f'ALTER DATABASE "{pair.source}" RESET default_transaction_read_only')


if __name__ == "__main__":
    from benchmarks.run_all import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
