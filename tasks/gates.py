"""The task that runs a quality gate and turns its outcome into artifacts and audit."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from apim_upgrade import copies
from apim_upgrade.catalog import Snapshot, take_snapshot
from apim_upgrade.errors import GateFailed
from apim_upgrade.gates import run_gate
from apim_upgrade.plan import Plan
from apim_upgrade.steps import audited_step
from expectations.copy_gate import build_copy_gate
from tasks.retry import retryable_task

PHASE = "prepare-databases"


@retryable_task("validate_copy")
def validate_copy(plan: Plan, role: str, source: Snapshot) -> list[dict[str, object]]:
    """Gate the copy against the source snapshot; mark it verified only if it passes."""
    logger = get_run_logger()
    pair = plan.databases.roles()[role]
    server = plan.server()
    with audited_step(plan, PHASE, "validate_copy", {"role": role, "source_digest": source.digest()}) as rec:
        copy_snapshot = take_snapshot(server, pair.target, pair.db_schema)
        spec = build_copy_gate(role, source, pair.target, copy_snapshot.tables)
        result = run_gate(plan.work_dir / "gx", server, spec)
        rows = comparison_rows(source, copy_snapshot)
        rec.gates.append(result.summary())
        rec.details.update(
            role=role,
            target=pair.target,
            copy_digest=copy_snapshot.digest(),
            data_docs=result.docs_index,
            mismatched_tables=[r["table"] for r in rows if r["status"] != "ok"],
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
            raise GateFailed(result.name, result.failures, result.docs_index)
        copies.mark_copy(
            server,
            plan.postgres.maintenance_db,
            pair.target,
            copies.marker(plan, pair.source, "verified", source_digest=source.digest()),
        )
    logger.info(
        "gate %s passed on '%s' (%d expectations); Data Docs: %s",
        result.name,
        pair.target,
        len(result.outcomes),
        result.docs_index,
    )
    return rows


def comparison_rows(source: Snapshot, copy: Snapshot) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for table in sorted(set(source.row_counts) | set(copy.row_counts)):
        a, b = source.row_counts.get(table), copy.row_counts.get(table)
        status = (
            "ok"
            if a == b
            else ("missing in copy" if b is None else "not in source" if a is None else "count differs")
        )
        rows.append({"table": table, "source_rows": a, "copy_rows": b, "status": status})
    return rows


def _outcomes_markdown(gate: str, outcomes: list, docs: str | None) -> str:
    lines = [f"### Gate `{gate}`", "", "| expectation | result | detail |", "|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.label} | {'pass' if o.success else '**FAIL**'} | {o.detail[:300]} |")
    if docs:
        lines += ["", f"Data Docs: {docs}"]
    return "\n".join(lines)
