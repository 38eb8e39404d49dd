"""The task that runs a quality gate and turns its outcome into artifacts and audit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Flow, State, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.flows import FlowStateHook

from apim_upgrade.errors import GateFailed
from apim_upgrade.phases import PREPARE_DATABASES
from apim_upgrade.plan import Plan
from apim_upgrade.postgres import copies, history
from apim_upgrade.postgres.catalog import Snapshot, take_snapshot
from apim_upgrade.proof.gates import build_pending_data_docs, run_gate
from apim_upgrade.proof.steps import audited_step
from apim_upgrade.proof.survival import Survival, accepted_customisations, survival
from apim_upgrade.wso2.distribution import ddl_file
from expectations.copy_gate import build_copy_gate
from expectations.migration_gate import build_change_gate
from tasks.retry import retryable_task

PHASE = PREPARE_DATABASES.name


def build_data_docs_hook(flow: Flow[Any, Any], flow_run: FlowRun, state: State) -> None:
    """Phase-flow hook (completed, failed or crashed): render the Data Docs of every gate the
    phase ran, once, instead of after each gate (see apim_upgrade.proof.gates.run_gate)."""
    build_pending_data_docs()


# on_completion, on_failure and on_crashed of each flow that runs gates
DATA_DOCS_HOOKS: list[FlowStateHook[..., Any]] = [build_data_docs_hook]


@retryable_task("validate_copy")
def validate_copy(plan: Plan, role: str, source: Snapshot) -> list[dict[str, object]]:
    """Gate the copy against the source snapshot; mark it verified only if it passes."""
    logger = get_run_logger()
    pair = plan.databases.roles()[role]
    server = plan.server()
    with audited_step(plan, PHASE, "validate_copy", {"role": role, "source_digest": source.digest()}) as rec:
        copy_snapshot = take_snapshot(server, pair.target, pair.db_schema)
        kept = survival(source, accepted=accepted_customisations(plan))  # a copy removes nothing
        spec = build_copy_gate(role, source, copy_snapshot, must_survive=[o.label() for o in kept.required()])
        result = run_gate(plan.work_dir / "gx", server, spec, f"{PHASE}-validate_copy")
        rows = comparison_rows(source, copy_snapshot)
        rec.gates.append(result.summary())
        rec.details.update(
            role=role,
            target=pair.target,
            copy_digest=copy_snapshot.digest(),
            data_docs=result.docs_index,
            mismatched_tables=[r["table"] for r in rows if r["status"] != "ok"],
            **survival_details(kept, copy_snapshot),
        )
        create_table_artifact(
            key=f"copy-gate-{role}",
            table=rows,
            description=f"Row counts: {pair.source} (source snapshot) vs "
            f"{pair.target} (copy) - gate {'passed' if result.success else 'FAILED'}",
        )
        create_markdown_artifact(
            key=f"copy-gate-{role}-outcomes",
            markdown=_outcomes_markdown(result.name, result.outcomes, result.docs_index),
            description=f"Great Expectations gate {result.name}",
        )
        if not result.success:
            # No longer trustworthy: the next run must rebuild this copy, not skip it.
            copies.mark_copy(
                server,
                plan.postgres.maintenance_db,
                pair.target,
                copies.marker(plan, pair.source, "gate-failed"),
            )
            raise GateFailed(
                result.name, result.failures + kept.failures(copy_snapshot, pair.target), result.docs_index
            )
        copies.mark_copy(
            server,
            plan.postgres.maintenance_db,
            pair.target,
            copies.marker(plan, pair.source, "verified", source_digest=source.digest()),
        )
        # The verified copy's exact counts are the base of the first JVM phase's "before".
        rec.details["checkpoint"] = str(copy_snapshot.save(verified_copy_path(plan, pair.target)))
    logger.info(
        "gate %s passed on '%s' (%d expectations); Data Docs: %s",
        result.name,
        pair.target,
        len(result.outcomes),
        result.docs_index,
    )
    return rows


def verified_copy_path(plan: Plan, target: str) -> Path:
    return plan.work_dir / "checkpoints" / f"verified-{target}.json"


def incremental_base(plan: Plan, target: str) -> Snapshot | None:
    """The newest snapshot of ``target`` known (stored checkpoints, the verified copy's counts):
    what the next snapshot of it proves unchanged tables against instead of counting them."""
    path = verified_copy_path(plan, target)
    verified = Snapshot.load(path) if path.is_file() else None
    return history.latest(plan.server(), plan.databases.apim.target, target, verified)


def survival_details(kept: Survival, after: Snapshot) -> dict[str, list[str]]:
    """What a gate's audit record says about objects that are gone: vanished (the gate fails),
    removed by the target version's DDL, accepted by the plan."""
    return {"vanished": [o.label() for o in kept.vanished(after)], **kept.gone_as_allowed(after)}


def comparison_rows(
    source: Snapshot,
    copy: Snapshot,
    labels: tuple[str, str] = ("source_rows", "copy_rows"),
    expected: dict[str, str] | None = None,
) -> list[dict[str, object]]:
    """One row per table: its counts under ``labels`` (before/after for a step), a status and, for a
    count the step is declared to change (``expected``: table -> why), that reason."""
    rows: list[dict[str, object]] = []
    for table in sorted(set(source.row_counts) | set(copy.row_counts)):
        a, b = source.row_counts.get(table), copy.row_counts.get(table)
        status = (
            "ok" if a == b else ("missing in copy" if b is None else "not in source" if a is None else "count differs")
        )
        row: dict[str, object] = {"table": table, labels[0]: a, labels[1]: b, "status": status}
        if status == "count differs" and expected and table in expected:
            row.update(status="count changed as declared", reason=expected[table])
        rows.append(row)
    return rows


# The reason shown for each row count a JVM step is declared to change.
COUNT_CHANGE_REASONS = {
    "reg_log": "the API-M client's re-indexing (post-migration-scripts/common/reg_db/reg-index.sql) cleans up REG_LOG"
}


def _outcomes_markdown(gate: str, outcomes: list, docs: str | None) -> str:
    lines = [f"### Gate `{gate}`", "", "| expectation | result | detail |", "|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.label} | {'pass' if o.success else '**FAIL**'} | {o.detail[:300]} |")
    if docs:
        lines += ["", f"Data Docs: {docs}"]
    return "\n".join(lines)


# Which tables each JVM migration step is responsible for (the identity migration
# handles everything that is not API-M's own AM_ tables, including the shared DB).
# Row counts a step is known to change: the API-M client's artifact re-indexing runs
# post-migration-scripts/common/reg_db/reg-index.sql, which cleans up REG_LOG.
EXPECTED_COUNT_CHANGES: dict[str, dict[str, set[str]]] = {"api": {"shared": {"reg_log"}}}
COMPONENT_TABLES = {
    "identity": {"apim": lambda t: not t.startswith("am_"), "shared": lambda t: True},
    "api": {"apim": lambda t: t.startswith("am_"), "shared": lambda t: False},
}


@retryable_task("validate_migration")
def validate_migration(
    plan: Plan, phase: str, before: dict[str, Snapshot], component: str, dbscripts: str
) -> list[dict[str, object]]:
    """After a JVM run: no table lost, counts unchanged, nothing gone that WSO2 does not remove by name
    (4.0.0's DDL has it, 4.2.0's does not), the new version's tables/columns present."""
    from apim_upgrade.postgres.schema_diff import reference_catalog

    server = plan.server()
    summaries = []
    source_dbscripts = plan.schema_upgrade.source_dbscripts if plan.schema_upgrade is not None else None
    accepted = accepted_customisations(plan)
    afters: dict[str, Snapshot] = {}
    with audited_step(plan, phase, "validate_migration", {"component": component}) as rec:
        failures: list[str] = []
        docs = None
        for role, pair in plan.databases.roles().items():
            include = COMPONENT_TABLES[component][role]
            reference = reference_catalog(server, ddl_file(dbscripts, role))
            required = [f"{t}.{c}" for t, tdef in reference.tables.items() if include(t) for c in tdef.columns]
            source_ref = reference_catalog(server, ddl_file(source_dbscripts, role)) if source_dbscripts else None
            kept = survival(before[role], source_ddl=source_ref, target_ddl=reference, accepted=accepted)
            after = take_snapshot(server, pair.target, pair.db_schema, base=before[role])
            spec = build_change_gate(
                f"{phase}-{role}",
                pair.target,
                before[role],
                after,
                required_columns=required,
                count_may_change=EXPECTED_COUNT_CHANGES.get(component, {}).get(role, set()),
                must_survive=[o.label() for o in kept.required()],
            )
            result = run_gate(plan.work_dir / "gx", server, spec, f"{phase}-validate_migration")
            docs = result.docs_index
            rec.gates.append(result.summary())
            rec.details[role] = {**survival_details(kept, after), **after.counting_record()}
            declared = EXPECTED_COUNT_CHANGES.get(component, {}).get(role, set())
            summaries += comparison_rows(
                before[role],
                after,
                labels=("before_rows", "after_rows"),
                expected={t: COUNT_CHANGE_REASONS.get(t, f"declared for the {component} migration") for t in declared},
            )
            failures += [f"{pair.target}: {f}" for f in result.failures] + kept.failures(after, pair.target)
            afters[role] = after
        changed = [r for r in summaries if r["status"] != "ok"]
        if not failures:
            _store_afters(plan, phase, afters)
        create_table_artifact(
            key=f"{phase}-row-counts",
            table=changed or [{"table": "(no changes)"}],
            description=f"Tables whose row count changed during {phase}",
        )
        if failures:
            raise GateFailed(f"{phase}", failures, docs)
    return summaries


@retryable_task("validate_unchanged")
def validate_unchanged(plan: Plan, phase: str, before: dict[str, Snapshot]) -> None:
    """A read-only step (pre-migration validation) must leave every table's row count as it was,
    and every object (table, column, index, constraint, sequence) where it was."""
    server = plan.server()
    afters: dict[str, Snapshot] = {}
    with audited_step(plan, phase, "validate_unchanged") as rec:
        failures: list[str] = []
        docs = None
        for role, pair in plan.databases.roles().items():
            after = afters[role] = take_snapshot(server, pair.target, pair.db_schema, base=before[role])
            kept = survival(before[role])  # a read-only step removes nothing, accepted or not
            spec = build_change_gate(
                f"{phase}-{role}", pair.target, before[role], after, must_survive=[o.label() for o in kept.required()]
            )
            result = run_gate(plan.work_dir / "gx", server, spec, f"{phase}-validate_unchanged")
            docs = result.docs_index
            rec.gates.append(result.summary())
            rec.details[role] = {**survival_details(kept, after), **after.counting_record()}
            failures += [f"{pair.target}: {f}" for f in result.failures] + kept.failures(after, pair.target)
            if after.catalog_digest() != before[role].catalog_digest():
                failures.append(f"{pair.target}: the schema changed during a read-only step")
        if failures:
            raise GateFailed(phase, failures, docs)
        _store_afters(plan, phase, afters)


def _store_afters(plan: Plan, phase: str, afters: dict[str, Snapshot]) -> None:
    """A passed gate's "after" is the base of the next step's "before" (stored: survives a crash)."""
    for role, after in afters.items():
        history.checkpoint(plan.server(), plan.databases.apim.target, phase, f"after-{role}", _const(after))


def _const(snapshot: Snapshot) -> Callable[[], Snapshot]:
    return lambda: snapshot
