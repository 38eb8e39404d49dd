"""Tasks that set up and tear down a rehearsal."""

from __future__ import annotations

from apim_upgrade.plan import Plan
from apim_upgrade.postgres import copies
from apim_upgrade.proof.steps import audited_step
from apim_upgrade.rehearsal import derive_rehearsal_plan
from tasks.retry import retryable_task


@retryable_task("prepare_rehearsal_plan")
def prepare_rehearsal_plan(plan: Plan, fresh: bool) -> str:
    path = derive_rehearsal_plan(plan)
    if fresh:
        from apim_upgrade.plan import load_plan

        drop_rehearsal_copies.fn(load_plan(path))
    return str(path)


@retryable_task("drop_rehearsal_copies")
def drop_rehearsal_copies(plan: Plan) -> str:
    """Drop the rehearsal's own copies (never a database this tool did not make for this plan)."""
    server, maint = plan.server(), plan.postgres.maintenance_db
    dropped = []
    with audited_step(plan, "rehearsal", "drop_rehearsal_copies") as rec:
        for pair in plan.databases.roles().values():
            state = copies.target_state(server, maint, plan, pair.source, pair.target, False)
            if state in (copies.CopyState.VERIFIED, copies.CopyState.INCOMPLETE):
                copies.drop_copy(server, maint, pair.target)
                dropped.append(pair.target)
        rec.details["dropped"] = dropped
    return "dropped " + (", ".join(dropped) or "nothing")
