"""``apim-upgrade demo``: a complete rehearsal of every phase on a fresh sandbox estate under traffic."""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import tomli_w

from apim_upgrade.plan import load_plan
from apim_upgrade.proof.ledger import read_ledger
from apim_upgrade.runtime.atomic import write_atomically
from apim_upgrade.wso2.node_identity import identify
from sandbox.create import _HEADER, create_sandbox, destroy_sandbox, sandbox_secrets
from sandbox.errors import SandboxError
from sandbox.nodes import production_nodes, start_estate
from sandbox.pgserver import find_server
from sandbox.traffic import start_traffic, stop_traffic


def accept_invalid_apis(plan_path: Path) -> list[str]:
    """What an operator does after reviewing the findings: accept the sandbox's broken APIs."""
    estate = json.loads((plan_path.parent / "estate.json").read_text())
    apis = [f"{n}:{v}:{p}" for n, v, p in estate["invalid_openapi_apis"]]
    doc = tomllib.loads(plan_path.read_text())
    doc["migration_environment"]["accepted_invalid_apis"] = apis
    write_atomically(plan_path, _HEADER + tomli_w.dumps(doc))
    return apis


def _traffic_summary(ledger_path: Path, started: datetime, ended: datetime) -> str:
    """What production's clients saw while it was rehearsed: a rehearsal never makes one of their calls fail."""
    during = [e for e in read_ledger(ledger_path) if started <= e.at <= ended]
    failed = [e for e in during if not e.ok]
    writes = sum(e.acknowledged_write for e in during)
    line = f"== traffic during the rehearsal: {len(during)} call(s), {writes} acknowledged write(s)"
    line += f", {len(failed)} failed"
    if failed:
        raise SandboxError(f"{line}; the first: {failed[0].at.isoformat()} {failed[0].call}: {failed[0].error}")
    return line


def run_demo(scale: int, directory: Path | None, keep: bool, say: Callable[[str], None] = print) -> Path:
    """Build a sandbox and rehearse the whole upgrade on it; returns the rehearsal's work directory."""
    from apim_upgrade.rehearsal import derive_rehearsal_plan
    from flows.upgrade_apim import upgrade_apim
    from tasks.jvm import PreMigrationFindings

    handle = find_server()
    where = directory or Path(tempfile.mkdtemp(prefix="apim-upgrade-demo-"))
    say(
        f"PostgreSQL: {handle.server.describe()}"
        + (f" (throwaway cluster in {handle.throwaway_dir})" if handle.throwaway_dir else "")
    )
    plan_path = None
    try:
        plan_path, summary = create_sandbox(where, handle.server, scale=scale)
        say(
            f"sandbox: {summary.apis} APIs ({len(summary.invalid_openapi_apis)} with broken OpenAPI), "
            f"{summary.access_tokens} tokens; plan {plan_path}"
        )
        os.environ.update(sandbox_secrets(where))  # the JVM phases read their secrets from the environment
        os.environ.setdefault("APIM_STANDIN_SPEED", "5")
        plan = load_plan(plan_path)
        assert plan.cutover is not None
        say("'production' running: " + ", ".join(start_estate(plan.cutover)))
        pid, ledger_path = start_traffic(plan_path)
        say(f"traffic: its clients get tokens and applications and call APIs (pid {pid}, ledger {ledger_path})")
        rehearse = lambda: upgrade_apim(plan=str(plan_path), mode="rehearsal", keep_copies=keep)  # noqa: E731
        started = datetime.now(UTC)
        try:
            results = rehearse()
        except PreMigrationFindings as exc:
            say(f"== the pre-migration gate stopped the rehearsal, as it should: {exc}")
            apis = accept_invalid_apis(plan_path)
            say(f"== demo: accepting the sandbox's deliberately broken APIs {apis} and resuming")
            results = rehearse()
        ended = datetime.now(UTC)
        stop_traffic(where)
        for name, result in results.items():
            say(f"== {name}: {result}")
        say(_traffic_summary(ledger_path, started, ended))
        say("'production' after the rehearsal (a rehearsal never touches it; its own nodes are stopped):")
        for node in production_nodes(plan.cutover):
            say("   " + identify(node).line())
        return derive_rehearsal_plan(load_plan(plan_path)).parent / "work"
    finally:
        stop_traffic(where)  # its ledger stays, beside the plan
        if plan_path is not None and not keep:
            destroy_sandbox(plan_path)
            say("sandbox databases dropped (use --keep to keep them)")
        handle.stop()
