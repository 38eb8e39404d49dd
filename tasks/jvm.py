"""Tasks of the JVM phases: migration kits, api-manager.sh runs, findings, completion."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.plan import Plan
from apim_upgrade.postgres import history
from apim_upgrade.postgres.catalog import Snapshot, take_snapshot
from apim_upgrade.proof.steps import audited_step, current_flow_run_id
from apim_upgrade.wso2 import distribution
from apim_upgrade.wso2.findings import Finding, FindingCollector, parse_line, write_csv
from apim_upgrade.wso2.jvm import JvmRun, run_api_manager, stop_leftover_server
from tasks.environment import find_home, jvm_secrets
from tasks.gates import incremental_base
from tasks.retry import retryable_task

IDENTITY_ARGS = ("-Dmigrate", "-Dcomponent=identity")
API_ARGS = ("-Dmigrate", "-DmigrateFromVersion=4.0.0", "-DmigratedVersion=4.2.0")
PRE_MIGRATION_ARGS = (*API_ARGS, "-DrunPreMigration")
IDENTITY_DONE = r"Execution was done through all the requested version list"
API_DONE = r"Successfully completed API-M migration from 4\.0\.0 to 4\.2\.0"
PRE_MIGRATION_DONE = r"Running all validator steps|Running validator step"


class PreMigrationFindings(ApimUpgradeError):
    """APIs whose definitions will break after migration: fix them (or accept them in the plan)."""

    exit_code = 7


@retryable_task("check_phase_done")
def check_phase_done(plan: Plan, phase: str) -> bool:
    """True when this phase already completed against the current target copy."""
    done = history.completed(plan.server(), plan.databases.apim.target, phase, "done")
    if done is None:
        return False
    with audited_step(plan, phase, "check_phase_done", {"phase": phase}) as rec:
        rec.outcome = "skipped"
        rec.details.update(completed_at=done[0].isoformat(), reason="already completed on this copy")
    get_run_logger().info("phase %s already completed on this copy at %s: skipping", phase, done[0])
    return True


@retryable_task("mark_phase_done")
def mark_phase_done(plan: Plan, phase: str, evidence: dict[str, Any] | None = None) -> None:
    with audited_step(plan, phase, "mark_phase_done", {"phase": phase}) as rec:
        history.mark_done(plan.server(), plan.databases.apim.target, phase, "done", current_flow_run_id(), evidence)
        rec.details.update(evidence or {})


@retryable_task("install_migration_kit")
def install_migration_kit(plan: Plan, phase: str, kit: str) -> list[str]:
    """kit 'identity' or 'api'; installing the API kit removes the identity files first (guide)."""
    me = plan.section("migration_environment")
    home = find_home(plan)
    with audited_step(plan, phase, "install_migration_kit", {"kit": kit}) as rec:
        removed = distribution.remove_migration_kit(home, me.identity_migration_jar.name)
        removed += distribution.remove_migration_kit(home, me.api_migration_jar.name)
        if kit == "identity":
            installed = distribution.install_migration_kit(
                home, me.identity_migration_resources, me.identity_migration_jar
            )
        else:
            installed = distribution.install_migration_kit(home, me.api_migration_resources, me.api_migration_jar)
        rec.details.update(kit=kit, removed=removed, installed=installed)
    return installed


@retryable_task("snapshot_targets")
def snapshot_targets(plan: Plan, phase: str) -> dict[str, Snapshot]:
    """Counts and catalogue of both copies before the phase's first attempt (kept for reruns)."""
    server, apim_target = plan.server(), plan.databases.apim.target
    with audited_step(plan, phase, "snapshot_targets") as rec:
        snaps = {
            role: history.checkpoint(
                server,
                apim_target,
                phase,
                f"before-{role}",
                lambda pair=pair: take_snapshot(  # type: ignore[misc]
                    server, pair.target, pair.db_schema, base=incremental_base(plan, pair.target)
                ),
            )
            for role, pair in plan.databases.roles().items()
        }
        rec.details.update({f"{r}_counting": s.counting_record() for r, s in snaps.items()})
        rec.details.update({f"{r}_rows": s.total_rows for r, s in snaps.items()})
        rec.details.update({f"{r}_digest": s.digest() for r, s in snaps.items()})
        rec.details.update({f"{r}_taken_at": s.taken_at.isoformat() for r, s in snaps.items()})
    return snaps


def _run(
    plan: Plan,
    phase: str,
    args: tuple[str, ...],
    markers: tuple[str, ...],
    collector: FindingCollector | None = None,
) -> dict[str, Any]:
    me = plan.section("migration_environment")
    logger = get_run_logger()
    home = find_home(plan)
    stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.monotonic_ns() % 10**6:06d}"
    log_file = plan.work_dir / "logs" / f"{phase}-{stamp}.log"

    def sink(line: str) -> None:
        logger.info("%s", line)
        if collector is not None:
            collector(line)

    run = JvmRun(
        label=f"{phase} (api-manager.sh {' '.join(args)})",
        home=home,
        args=args,
        java_home=me.java_home,
        secrets=jvm_secrets(me),
        log_file=log_file,
        timeout=me.jvm_timeout_seconds,
        required_markers=markers,
        expected_error=(lambda line: parse_line(line) is not None) if collector is not None else None,
    )
    with audited_step(plan, phase, "run_api_manager", {"args": list(args)}) as rec:
        rec.details.update(args=list(args), log_file=str(log_file), home=str(home))
        leftover = stop_leftover_server(home)  # a crashed run's server would share the copies with ours
        if leftover is not None:
            rec.details["stopped_leftover_server"] = leftover
            logger.warning("stopped a server of %s left running by an earlier run (pid %s)", home, leftover["pid"])
        result = run_api_manager(run, on_line=sink)
        rec.details.update(
            server_up_after_s=round(result.server_up_after, 1),
            seconds=round(result.seconds, 1),
            exit_code=result.exit_code,
            markers=list(result.markers.values()),
        )
    return {"log_file": str(log_file), "seconds": round(result.seconds, 1)}


@retryable_task("run_identity_migration")
def run_identity_migration(plan: Plan, phase: str) -> dict[str, Any]:
    return _run(plan, phase, IDENTITY_ARGS, (IDENTITY_DONE,))


@retryable_task("run_api_migration")
def run_api_migration(plan: Plan, phase: str) -> dict[str, Any]:
    return _run(plan, phase, API_ARGS, (API_DONE,))


@retryable_task("run_pre_migration_validation")
def run_pre_migration_validation(plan: Plan, phase: str) -> list[Finding]:
    collector = FindingCollector()
    _run(plan, phase, PRE_MIGRATION_ARGS, (PRE_MIGRATION_DONE,), collector)
    return collector.findings


@retryable_task("report_findings")
def report_findings(plan: Plan, phase: str, findings: list[Finding]) -> list[Finding]:
    """CSV + table artifact; stops the flow when an API that is not accepted is broken."""
    me = plan.section("migration_environment")
    accepted = set(me.accepted_invalid_apis)
    csv_path = write_csv(findings, plan.work_dir / "reports" / "pre-migration-findings.csv")
    blocking = [f for f in findings if f.api_key not in accepted]
    with audited_step(plan, phase, "report_findings", {"accepted": sorted(accepted)}) as rec:
        rec.details.update(
            findings=len(findings),
            blocking=sorted({f.api_key for f in blocking}),
            accepted_present=sorted({f.api_key for f in findings} & accepted),
            csv=str(csv_path),
        )
        rows = [
            {
                "api": f.name,
                "version": f.version,
                "provider": f.provider,
                "validator": f.validator,
                "message": f.message[:300],
                "accepted": f.api_key in accepted,
            }
            for f in findings
        ]
        create_table_artifact(
            key="pre-migration-findings",
            table=rows or [{"api": "(none)"}],
            description=f"API pre-migration validation: {len(findings)} finding(s)",
        )
        rec.gates.append(
            {
                "gate": "pre-migration-findings",
                "success": not blocking,
                "failed": [f"{f.api_key}: {f.validator}: {f.message[:200]}" for f in blocking],
            }
        )
        if blocking:
            apis = sorted({f.api_key for f in blocking})
            paste = "accepted_invalid_apis = [" + ", ".join(f'"{k}"' for k in apis) + "]"
            raise PreMigrationFindings(
                f"{len(apis)} API(s) have definitions that will break after migration: "
                + "; ".join(f"{f.api_key}: {f.message[:160]}" for f in blocking)
                + f". Fix them in 4.0.0 before migrating, or accept them: under [migration_environment] "
                f"in {plan.source_path}, set {paste}. Details: {csv_path}"
            )
    return findings


@retryable_task("discard_migration_home")
def discard_migration_home(plan: Plan, phase: str) -> str:
    me = plan.section("migration_environment")
    home = find_home(plan)
    with audited_step(plan, phase, "discard_migration_home", {"mode": me.cleanup}) as rec:
        if me.cleanup == "archive":
            archive = distribution.archive_home(home, plan.work_dir / "archive" / f"{home.name}.tar.gz")
            rec.details.update(archive=str(archive), archive_sha256=distribution.sha256_file(archive))
        shutil.rmtree(home)
        rec.details.update(mode=me.cleanup, removed=str(home))
    return str(home)


def home_dbscripts(plan: Plan) -> Path:
    return find_home(plan) / "dbscripts"
