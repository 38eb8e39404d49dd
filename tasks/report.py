"""The run report, rebuilt from the audit trail and linked from the Prefect UI."""

from __future__ import annotations

from prefect.artifacts import create_link_artifact

from apim_upgrade.plan import Plan
from apim_upgrade.proof.report import build_report
from tasks.retry import retryable_task


@retryable_task("publish_report")
def publish_report(plan: Plan) -> str:
    path = build_report(plan.work_dir)
    create_link_artifact(
        key="upgrade-report",
        link=path.as_uri(),
        link_text=f"apim-upgrade report of {plan.name}",
        description="Self-contained HTML report: timeline, gates, findings, scripts, conformance",
    )
    return str(path)
