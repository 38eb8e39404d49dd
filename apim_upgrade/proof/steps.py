"""One function writes every audit record: :func:`audited_step`.

It times the step, records its outcome (also on failure), and mirrors the
trail into the target API-M database's history schema once that copy exists
and is ours.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apim_upgrade.errors import ApimUpgradeError, DiskFull, disk_full_in
from apim_upgrade.plan import Plan
from apim_upgrade.postgres import db, queries
from apim_upgrade.postgres.copies import read_marker
from apim_upgrade.proof import audit

# Raised (sys.audit) at every step boundary; crash tests hook it to stop a run exactly there.
STEP_EVENT = "apim_upgrade.step"


@dataclass
class StepRecord:
    """What a step reports about itself while it runs."""

    details: dict[str, Any] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "succeeded"


def current_flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return str(run_id) if run_id else None


def current_task_attempt() -> int:
    """1 for a task's first run, 2 for its first retry, ...; 1 outside a task."""
    from prefect.runtime import task_run

    try:
        return max(int(task_run.run_count or 1), 1)
    except (TypeError, ValueError):
        return 1


@contextmanager
def audited_step(
    plan: Plan, phase: str, step: str, inputs: Any = None, *, intent: dict[str, Any] | None = None
) -> Iterator[StepRecord]:
    """Run a step and append its audit record (outcome ``failed`` if it raises).

    ``intent`` writes a ``started`` record first: a write-ahead note for
    steps whose half-done state must be recognisable after a crash.
    """
    started = datetime.now(UTC)
    run_id = current_flow_run_id()
    common = {
        "plan": plan.name,
        "plan_digest": plan.digest,
        "phase": phase,
        "step": step,
        "flow_run_id": run_id,
        "inputs": inputs,
    }
    if intent is not None:
        audit.append_record(
            plan.audit_path, started_at=started, ended_at=None, outcome="started", details=intent, **common
        )
    record = StepRecord(details=dict(intent or {}))
    attempt = current_task_attempt()
    if attempt > 1:  # a retry after a transient failure: the trail shows the failed attempt, then this one
        record.details["attempt"] = attempt
    sys.audit(STEP_EVENT, "before", phase, step)  # a no-op unless a hook listens (crash tests)
    try:
        yield record
    except BaseException as exc:
        failure: BaseException = exc
        full = None if isinstance(exc, ApimUpgradeError) else disk_full_in(exc)
        if full is not None:  # one line naming the file, not a library's stack
            failure = full
        record.details["error"] = str(failure) if isinstance(failure, ApimUpgradeError) else repr(failure)
        try:
            audit.append_record(
                plan.audit_path,
                started_at=started,
                ended_at=datetime.now(UTC),
                outcome="failed",
                details=record.details,
                gates=record.gates,
                **common,
            )
        except DiskFull:
            if failure is exc and not isinstance(exc, DiskFull):
                raise  # the trail could not take the record: that is now the failure to report
            # The step already failed for lack of space: its record waits for the rerun's retry.
        _mirror_to_database(plan)
        if failure is not exc:
            raise failure from None
        raise
    audit.append_record(
        plan.audit_path,
        started_at=started,
        ended_at=datetime.now(UTC),
        outcome=record.outcome,
        details=record.details,
        gates=record.gates,
        **common,
    )
    _mirror_to_database(plan)
    sys.audit(STEP_EVENT, "after", phase, step)


def _mirror_to_database(plan: Plan) -> None:
    """Copy missing records into the target API-M DB, if that copy exists and is ours."""
    target = plan.databases.apim.target
    try:
        server = plan.server()
        with db.session(server, plan.postgres.maintenance_db, read_only=True, autocommit=True) as conn:
            info = db.fetch_one(conn, queries.DATABASE_INFO, ([target],))
        mark = read_marker(info[2]) if info else None
        if not mark or mark.get("plan") != plan.name:
            return  # not created yet (or not ours): the file alone holds the trail for now
        audit.sync_to_database(server, target, audit.read_records(plan.audit_path))
    except ApimUpgradeError:
        # The file is the primary copy; the next step or `audit verify` resyncs.
        return
