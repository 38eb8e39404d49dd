"""Tasks of the schema-upgrade phase: vendor scripts, their gates, conformance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from apim_upgrade.errors import GateFailed
from apim_upgrade.phases import SCHEMA_UPGRADE
from apim_upgrade.plan import Plan
from apim_upgrade.postgres import history, schema_runner
from apim_upgrade.postgres.catalog import SchemaObject, Snapshot, take_snapshot
from apim_upgrade.postgres.schema_diff import reference_catalog
from apim_upgrade.postgres.sqlscript import Script, Statement, load_script
from apim_upgrade.proof import conformance, customisations
from apim_upgrade.proof.customisations import Customisation, find_customisations
from apim_upgrade.proof.gates import run_gate
from apim_upgrade.proof.steps import audited_step, current_flow_run_id
from apim_upgrade.proof.survival import accepted_customisations, survival
from apim_upgrade.wso2.distribution import ddl_file
from expectations.migration_gate import build_change_gate
from tasks.gates import comparison_rows, incremental_base, survival_details
from tasks.retry import retryable_task

PHASE = SCHEMA_UPGRADE.name


@retryable_task("load_sql_scripts")
def load_sql_scripts(plan: Plan) -> list[Script]:
    """Read, checksum and split every script; refuse a broken order before anything runs."""
    section = plan.section("schema_upgrade")
    scripts = [load_script(s.path, s.from_version, s.to_version) for s in section.scripts]
    schema_runner.check_order(scripts, section.start_version)
    return scripts


@retryable_task("check_script_history")
def check_script_history(plan: Plan, scripts: list[Script], rebaseline: bool) -> list[schema_runner.ScriptStatus]:
    """Applied scripts are skipped; a changed file is drift: refused unless re-baselined explicitly."""
    server, target = plan.server(), plan.databases.apim.target
    statuses = schema_runner.statuses_for(server, target, scripts)
    drift = [s for s in statuses if s.state == "drift"]
    with audited_step(plan, PHASE, "check_script_history", {"rebaseline": rebaseline}) as rec:
        rec.details["scripts"] = [
            {
                "script": s.script.name,
                "state": s.state,
                "sha256": s.script.sha256,
                "recorded_sha256": s.recorded.sha256 if s.recorded else None,
            }
            for s in statuses
        ]
        if drift and not rebaseline:
            raise schema_runner.ScriptDrift(
                "script(s) changed since they were applied to '"
                + target
                + "': "
                + "; ".join(
                    f"{s.script.name} recorded sha256 {s.recorded.sha256 if s.recorded else '?'}, "
                    f"file now {s.script.sha256}"
                    for s in drift
                )
                + ". Restore the applied file, or rerun with --rebaseline to accept the new file as applied"
            )
        for status in drift:
            schema_runner.rebaseline(server, target, status.script)
            rec.details.setdefault("rebaselined", []).append(status.script.name)
    return schema_runner.statuses_for(server, target, scripts) if drift else statuses


@retryable_task("snapshot_target")
def snapshot_target(plan: Plan, label: str) -> Snapshot:
    """The API-M copy before a script: stored at the first attempt, reused by reruns."""
    pair = plan.databases.apim
    server = plan.server()
    with audited_step(plan, PHASE, "snapshot_target", {"checkpoint": label}) as rec:
        snap = history.checkpoint(
            server,
            pair.target,
            PHASE,
            label,
            lambda: take_snapshot(server, pair.target, pair.db_schema, base=incremental_base(plan, pair.target)),
        )
        rec.details.update(
            checkpoint=label,
            target=pair.target,
            digest=snap.digest(),
            taken_at=snap.taken_at.isoformat(),
            **snap.counting_record(),  # with its tables and total rows
        )
    return snap


@retryable_task("check_script_validated")
def check_script_validated(plan: Plan, script: Script) -> bool:
    return (
        history.completed(plan.server(), plan.databases.apim.target, PHASE, f"validated-{script.to_version}")
        is not None
    )


@retryable_task("apply_sql_script")
def apply_sql_script(plan: Plan, script: Script, rank: int) -> schema_runner.AppliedScript:
    """One script, one transaction; statement-by-statement progress in the UI and the terminal."""
    logger = get_run_logger()
    total = len(script.statements)
    key = f"schema-{script.from_version}-{script.to_version}".replace(".", "-")
    progress = cast(
        UUID, create_progress_artifact(progress=0.0, key=key, description=f"{script.name}: statements applied")
    )
    last_update = [0.0]

    def on_statement(statement: Statement) -> None:
        logger.info(
            "%s: statement %d/%d (line %d): %s",
            script.name,
            statement.number,
            total,
            statement.line,
            statement.first_line,
        )
        now = time.monotonic()
        if now - last_update[0] > 0.5 or statement.number == total:
            update_progress_artifact(progress, 100.0 * (statement.number - 1) / total)
            last_update[0] = now

    target = plan.databases.apim.target
    inputs = {"script": script.name, "sha256": script.sha256, "rank": rank}
    with audited_step(plan, PHASE, "apply_sql_script", inputs) as rec:
        rec.details.update(
            script=str(script.path),
            sha256=script.sha256,
            statements=total,
            from_version=script.from_version,
            to_version=script.to_version,
            target=target,
            tables_altered=sorted(script.tables()),
        )
        applied = schema_runner.apply_script(
            plan.server(),
            target,
            script,
            rank,
            flow_run_id=current_flow_run_id(),
            on_statement=on_statement,
            run_as=plan.databases.apim.owner,
            schema=plan.databases.apim.db_schema,
            effects_step=(PHASE, _effects_step(script)),
        )
        rec.details["duration_ms"] = applied.duration_ms
        done = history.completed(plan.server(), target, PHASE, _effects_step(script))
        if done is not None:
            rec.details["effects"] = done[1]
    update_progress_artifact(progress, 100.0)
    logger.info("%s applied: %d statements in %.1f s", script.name, total, applied.duration_ms / 1000)
    return applied


def _effects_step(script: Script) -> str:
    return f"effects-{script.to_version}"


@retryable_task("validate_script")
def validate_script(plan: Plan, script: Script, before: Snapshot) -> Snapshot:
    """Counts unchanged unless declared; nothing gone that the script's target-version DDL does not
    remove by name (the previous script's ``dbscripts`` has it, this script's does not) or the plan
    accepts; the new version's tables and columns present.

    The snapshot taken after the script is stored as the next script's "before".
    """
    section = plan.section("schema_upgrade")
    spec_cfg = next(
        s for s in section.scripts if (s.from_version, s.to_version) == (script.from_version, script.to_version)
    )
    # The DDL of the version the script starts from: the script that led there names it.
    from_dbscripts = next(
        (s.dbscripts for s in section.scripts if s.to_version == script.from_version and s.dbscripts is not None),
        None,
    )
    server, pair = plan.server(), plan.databases.apim
    with audited_step(plan, PHASE, "validate_script", {"script": script.name}) as rec:
        required: list[str] = []
        ref = None
        if spec_cfg.dbscripts is not None:
            ref = reference_catalog(server, ddl_file(spec_cfg.dbscripts, "apim"))
            required = [f"{t}.{c}" for t, tdef in ref.tables.items() for c in tdef.columns]
        from_ref = reference_catalog(server, ddl_file(from_dbscripts, "apim")) if from_dbscripts else None
        kept = survival(before, source_ddl=from_ref, target_ddl=ref, accepted=accepted_customisations(plan))
        # What the script's own transaction recorded it changed (absent if it was applied by an
        # earlier version of this tool): counted whatever the counters say.
        done = history.completed(server, pair.target, PHASE, _effects_step(script))
        effects = schema_runner.ScriptEffects.from_record(done[1]) if done is not None else None
        after = take_snapshot(
            server,
            pair.target,
            pair.db_schema,
            base=before,
            must_count=effects.must_count(before.tables) if effects is not None else (),
        )
        rec.details.update(after.counting_record(), effects=effects.record() if effects is not None else None)
        rec.details.update(checkpoint=f"after-{script.to_version}", target=pair.target)
        spec = build_change_gate(
            f"after-{script.to_version}",
            pair.target,
            before,
            after,
            required_columns=required,
            count_may_change=spec_cfg.expected_row_changes,
            must_survive=[o.label() for o in kept.required()],
        )
        result = run_gate(plan.work_dir / "gx", server, spec, f"{PHASE}-validate_script")
        rec.gates.append(result.summary())
        rec.details.update(survival_details(kept, after))
        rows = comparison_rows(
            before,
            after,
            labels=("before_rows", "after_rows"),
            expected={t: f"in expected_row_changes of {script.name}" for t in spec_cfg.expected_row_changes},
        )
        altered = script.tables()
        changed = [dict(r, altered_by_script=r["table"] in altered) for r in rows if r["status"] != "ok"]
        rec.details.update(
            changed_tables=[r["table"] for r in changed],
            changed_but_not_altered=[r["table"] for r in changed if not r["altered_by_script"]],
        )
        create_table_artifact(
            key=f"schema-{script.to_version}-row-counts".replace(".", "-"),
            table=changed or [{"table": "(no row count changed)"}],
            description=f"Row counts changed by {script.name}",
        )
        if not result.success:
            raise GateFailed(result.name, result.failures + kept.failures(after, pair.target), result.docs_index)
        history.checkpoint(server, pair.target, PHASE, f"at-{script.to_version}", lambda: after)
        history.mark_done(
            server,
            pair.target,
            PHASE,
            f"validated-{script.to_version}",
            current_flow_run_id(),
            {"script": script.name, "sha256": script.sha256},
        )
    return after


def _extra_objects(
    result: conformance.Conformance, found: list[Customisation], accepted: set[SchemaObject]
) -> list[dict[str, object]]:
    """Every object the copy has that the reference does not, and why it may (or may not) be there."""
    carried = {c.obj for c in found if c.role == result.role and not c.accepted}
    out: list[dict[str, object]] = []
    for difference in result.differences:
        obj = difference.extra_object()
        if obj is None:
            continue
        if obj in carried:
            status = "carried-through customisation"
        elif obj in accepted:
            status = "accepted customisation"
        elif difference.key() in result.accepted:
            status = "accepted difference"
        else:
            status = "not accepted"
        out.append({"database": result.database, "object": obj.label(), "key": obj.key(), "status": status})
    return out


@retryable_task("check_conformance")
def check_conformance(
    plan: Plan,
    dbscripts: Path,
    label: str,
    *,
    databases: str = "target",
    fail: bool = True,
    phase: str = PHASE,
    stage: str | None = None,
) -> list[dict[str, object]]:
    """Compare both databases with a version's own DDL; report every difference.

    ``databases="source"`` is the customisation check run before anything starts: the
    sources are only read (in read-only transactions), and it reports without failing;
    its record lists every customisation (extra object) of the sources.

    ``databases="target"`` (the final check) names every extra object of the copies and
    passes an extra object only if it is a customisation carried through from the source
    or accepted in the plan; a carried-through customisation that is gone fails it.

    ``stage="before-start"`` (the schema upgrade's check): the differences the plan lists under
    ``fixed_by_first_start`` do not fail it (4.4.0 applies the remaining changes when it first
    starts); ``stage="after-start"`` (the cutover's check once 4.4.0 is up) fails on them.
    """
    section = plan.section("schema_upgrade")
    server = plan.server()
    accepted = set(section.accepted_differences)
    deferred = set(section.fixed_by_first_start) if stage == "before-start" else set()
    accepted |= deferred
    accepted_objects = accepted_customisations(plan)
    rows: list[dict[str, object]] = []
    inputs = {"reference": str(dbscripts), "of": databases, "stage": stage}
    with audited_step(plan, phase, "check_conformance", inputs) as rec:
        failures: list[str] = []
        docs = None
        found = find_customisations(plan, server) if databases == "target" else []
        extras: list[dict[str, object]] = []
        for role, pair in plan.databases.roles().items():
            dbname = pair.target if databases == "target" else pair.source
            carried = frozenset(c.obj for c in found if c.role == role) | accepted_objects
            result = conformance.check(
                server, role, dbname, dbscripts, accepted, pair.db_schema, customisations=carried
            )
            rows += result.rows()
            if databases == "target":  # GX runs only against the copies, never the sources
                spec = conformance.conformance_gate(result, pair.db_schema)
                gate = run_gate(plan.work_dir / "gx", server, spec, f"{phase}-check_conformance")
                rec.gates.append(gate.summary())
                docs = gate.docs_index
                extras += _extra_objects(result, found, accepted_objects)
                failures += [
                    f"{dbname}: customisation {c.obj.label()} of {c.database} was carried through and is gone"
                    for c in found
                    if c.role == role and not c.accepted and c.obj not in result.actual_objects
                ]
            else:
                extras += [c.record() for c in customisations.from_conformance(result, accepted_objects)]
            failures += [f"{dbname}: {d.describe()}" for d in result.unaccepted]
        key = "customisations" if databases == "source" else "extra_objects"
        rec.details.update(label=label, differences=len(rows), unaccepted=len(failures), **{key: extras})
        if stage == "after-start":  # the row totals once 4.4.0 runs on the copies (for the report)
            rec.details["rows"] = _rows_after_start(plan)
        if stage is not None:
            rec.details["stage"] = stage
            rec.details["left_to_first_start"] = sorted(
                {str(r["key"]) for r in rows if r.get("key") in deferred} - set(section.accepted_differences)
            )
            rec.details["fixed_by_first_start"] = {
                k: section.fixed_by_first_start[k] for k in rec.details["left_to_first_start"]
            }
        for extra in extras:
            get_run_logger().warning(
                "%s: %s (%s)", extra["database"], extra["object"], extra.get("status", "customisation")
            )
        create_table_artifact(
            key=f"conformance-{label}",
            table=rows or [{"difference": "(none)"}],
            description=f"Schema conformance of the {databases} databases with {dbscripts}",
        )
        if failures and fail:
            raise GateFailed(f"conformance-{label}", failures, docs)
        for line in failures:
            get_run_logger().warning("%s", line)
    return rows


@retryable_task("check_schema_upgraded")
def _rows_after_start(plan: Plan) -> dict[str, dict[str, object]]:
    """Row totals of the copies with 4.4.0 running on them, for the report's last checkpoint.

    Counted in full: with 4.4.0's pool connected, an incremental snapshot would wait for its
    sessions to end (their counters may be unflushed) and then count everything anyway.
    """
    server, rows = plan.server(), {}
    for role, pair in plan.databases.roles().items():
        snap = take_snapshot(server, pair.target, pair.db_schema)
        rows[role] = {"target": pair.target, "tables": len(snap.row_counts), "total_rows": snap.total_rows}
    return rows


def check_schema_upgraded(plan: Plan) -> bool:
    """True when the schema upgrade completed on this copy (its check before 4.4.0's start ran)."""
    if plan.schema_upgrade is None:
        return False
    return history.completed(plan.server(), plan.databases.apim.target, PHASE, "done") is not None
