"""Phase 7, schema-upgrade: vendor SQL 4.2.0 -> 4.3.0 -> 4.4.0 on the API-M copy, gated, then conformance."""

from __future__ import annotations

from prefect import flow

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import schema_runner
from apim_upgrade.proof.gates import prewarm as prewarm_gates
from tasks.gates import DATA_DOCS_HOOKS
from tasks.jvm import check_phase_done, mark_phase_done
from tasks.schema import (
    PHASE,
    apply_sql_script,
    check_conformance,
    check_script_history,
    check_script_validated,
    load_sql_scripts,
    snapshot_target,
    validate_script,
)


@flow(name=PHASE, on_completion=DATA_DOCS_HOOKS, on_failure=DATA_DOCS_HOOKS, on_crashed=DATA_DOCS_HOOKS)
def schema_upgrade(plan_path: str, rebaseline: bool = False) -> str:
    """Apply each pending script in order, each in one transaction, gated before and after."""
    plan = load_plan(plan_path)
    prewarm_gates()  # GX imports in the background while scripts are read, checked and applied
    section = plan.section("schema_upgrade")
    scripts = load_sql_scripts(plan)
    with schema_runner.upgrade_lock(plan.server(), plan.databases.apim.target, _lock_holder(plan.name)) as lock:
        statuses = check_script_history(plan, scripts, rebaseline)
        applied = 0
        for rank, status in enumerate(statuses, start=1):
            script = status.script
            if check_script_validated(plan, script):
                continue
            lock.ensure()  # a server restart during the previous step released it
            # Taken before the first attempt (or stored by the previous script's gate) and kept,
            # so a rerun after a failed gate is judged against the same "before".
            before = snapshot_target(plan, f"at-{script.from_version}")
            if status.state == "pending":
                apply_sql_script(plan, script, rank)
                applied += 1
            validate_script(plan, script, before)
        if not check_phase_done(plan, PHASE):
            # 4.4.0 fixes what the plan lists under fixed_by_first_start itself: checked again after its start.
            check_conformance(plan, section.target_dbscripts, "440", stage="before-start")
            mark_phase_done(plan, PHASE, {"scripts": [s.script.name for s in statuses]})
    return f"{applied} script(s) applied, {len(statuses) - applied} already applied; conforms to 4.4.0"


def dry_run(plan_path: str) -> list[str]:
    """What schema-upgrade would send to the API-M copy, statement by statement; changes nothing.

    The run's own lock and script code runs against a recording connection (see
    ``schema_runner.dry_run``), so what is printed cannot drift from what a run sends.
    """
    from apim_upgrade.postgres.sqlscript import load_script

    plan = load_plan(plan_path)
    section = plan.section("schema_upgrade")
    scripts = [load_script(s.path, s.from_version, s.to_version) for s in section.scripts]
    schema_runner.check_order(scripts, section.start_version)
    server, target = plan.server(), plan.databases.apim.target
    statuses = schema_runner.statuses_for(server, target, scripts)
    return schema_runner.dry_run(
        server, target, statuses, holder_name=_lock_holder(plan.name), run_as=plan.databases.apim.owner
    )


def _lock_holder(plan_name: str) -> str:
    """The application_name of the session holding the upgrade lock (who a refused run names)."""
    return f"apim-upgrade {plan_name} schema-upgrade"
