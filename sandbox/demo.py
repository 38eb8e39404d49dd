"""``apim-upgrade demo``: a complete rehearsal of every phase on a fresh sandbox estate."""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

import tomli_w

from apim_upgrade.plan import load_plan
from apim_upgrade.runtime.atomic import write_atomically
from apim_upgrade.wso2.nodes import identify
from sandbox.create import _HEADER, create_sandbox, destroy_sandbox, sandbox_secrets
from sandbox.nodes import production_nodes, start_estate
from sandbox.pgserver import find_server


def accept_invalid_apis(plan_path: Path) -> list[str]:
    """What an operator does after reviewing the findings: accept the sandbox's broken APIs."""
    estate = json.loads((plan_path.parent / "estate.json").read_text())
    apis = [f"{n}:{v}:{p}" for n, v, p in estate["invalid_openapi_apis"]]
    doc = tomllib.loads(plan_path.read_text())
    doc["migration_environment"]["accepted_invalid_apis"] = apis
    write_atomically(plan_path, _HEADER + tomli_w.dumps(doc))
    return apis


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
        rehearse = lambda: upgrade_apim(plan=str(plan_path), mode="rehearsal", keep_copies=keep)  # noqa: E731
        try:
            results = rehearse()
        except PreMigrationFindings as exc:
            say(f"== the pre-migration gate stopped the rehearsal, as it should: {exc}")
            apis = accept_invalid_apis(plan_path)
            say(f"== demo: accepting the sandbox's deliberately broken APIs {apis} and resuming")
            results = rehearse()
        for name, result in results.items():
            say(f"== {name}: {result}")
        say("'production' after the rehearsal (a rehearsal never touches it; its own nodes are stopped):")
        for node in production_nodes(plan.cutover):
            say("   " + identify(node).line())
        return derive_rehearsal_plan(load_plan(plan_path)).parent / "work"
    finally:
        if plan_path is not None and not keep:
            destroy_sandbox(plan_path)
            say("sandbox databases dropped (use --keep to keep them)")
        handle.stop()
