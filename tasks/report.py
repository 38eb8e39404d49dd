"""The run report, rebuilt from the audit trail: linked from the Prefect UI, and summarised there."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.plan import Plan
from apim_upgrade.proof.report import report_page, write_report
from apim_upgrade.proof.report_markdown import summary_markdown
from tasks.retry import retryable_task


@retryable_task("publish_report")
def publish_report(plan: Plan) -> str:
    page, out = report_page(plan.work_dir, traffic_ledger=plan.report.traffic_ledger)
    path = write_report(page, out)
    # The link works only on this host; the summary tells the story in the Prefect UI anywhere.
    create_markdown_artifact(
        key="upgrade-summary",
        markdown=summary_markdown(page, str(path)),
        description=f"Outcome, window, phases, gates, findings, scripts and decisions of {plan.name}",
    )
    create_link_artifact(
        key="upgrade-report",
        link=path.as_uri(),
        link_text=f"apim-upgrade report of {plan.name}",
        description="Self-contained HTML report: timeline, gates, findings, scripts, conformance",
    )
    return str(path)


def report_after_failure(plan: Plan) -> None:
    """Write the report of a run that is failing; never hides the failure it reports."""
    try:
        publish_report(plan)
    except (ApimUpgradeError, OSError) as exc:  # e.g. a full disk: the run's own error is what matters
        get_run_logger().warning("could not write the report of this failed run: %s", exc)
