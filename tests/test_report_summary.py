"""The Markdown summary on the parent run: the run's story in the Prefect UI, from the report's view model."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import timedelta
from pathlib import Path

import pytest
import tomli_w
from markdown_it import MarkdownIt

from apim_upgrade.plan import load_plan
from apim_upgrade.proof import audit
from apim_upgrade.proof.report import report_page
from apim_upgrade.proof.report_markdown import escape, summary_markdown
from tests.test_report import CONFORMANCE_ERROR, PLAN, SHA_44, T0, _Trail, make_work_dir

EVIL = "<script>alert(1)</script> | *bold* _x_ [link](http://evil.example) `code` # h ~~s~~ &amp;"


def _sections(markdown: str) -> list[str]:
    return re.findall(r"^## (.+)$", markdown, re.M)


def test_summary_tells_the_story_outcome_first(tmp_path: Path) -> None:
    work = make_work_dir(tmp_path / "work")
    page, out = report_page(work)
    md = summary_markdown(page, str(out))
    lines = md.splitlines()
    assert lines[0] == "# apim-upgrade run: prod-estate"
    # The outcome and its error come before anything else, the error verbatim in a fenced block.
    assert lines[2].startswith("**Outcome: FAILED at schema-upgrade/check\\_conformance**")
    assert md.index("```text\n" + CONFORMANCE_ERROR + "\n```") < md.index("## ")
    assert "Failures repaired by a later run: prepare-databases/validate\\_copy" in md
    assert _sections(md) == [
        "Window",
        "Phases",
        "Quality gates",
        "Pre-migration findings",
        "SQL scripts",
        "Cutover decisions",
    ]
    assert "- **first start**: 2026-03-01 09:00:00 UTC" in md and "- **flow runs**: 5" in md
    # Phases with their timings and state, one table row each.
    assert re.search(
        r"^\| api-pre-migration \| 2026-03-01 09:00:16 UTC \| .* \| 42\.0s \| 3 \| ✅ succeeded \|$", md, re.M
    )
    assert re.search(r"^\| schema-upgrade \| .* \| ❌ failed \|$", md, re.M)
    assert "5 of 7 gate run(s) passed, 2 failed." in md
    assert "table\\_name=am\\_table\\_007, expected\\_rows=259, actual\\_rows=250" in md
    assert "| TicketsAPI17 | 1.0.0 | admin@globex.com | OpenAPI definition |" in md and "\\<expected\\> close" in md
    assert SHA_44 in md and "wso2am-4.3.0-to-4.4.0.postgresql.sql | 4.3.0 → 4.4.0" in md
    assert md.rstrip().endswith(f"Full report (on the run's host): {escape(out)}")
    assert "No cutover in this run." in md
    # Every table is well formed: the same number of cells on each of its lines.
    for block in re.split(r"\n\n", md):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if rows:
            assert len({len(re.findall(r"(?<!\\)\|", r)) for r in rows}) == 1, block


def test_cutover_decisions_show_who_decided_and_why(tmp_path: Path) -> None:
    t = _Trail(tmp_path)
    t.add(
        "run-8",
        "cutover",
        "approval",
        "rejected",
        details={"decision": "reject", "by": "carol@cab", "reason": "freeze"},
    )
    md = summary_markdown(report_page(tmp_path)[0])
    assert md.splitlines()[2] == "**Outcome: REJECTED at cutover/approval** (seq 1, 2026-03-01 09:00:01 UTC)"
    assert "reject by carol@cab: freeze" in md
    t.add("run-9", "cutover", "approval", details={"decision": "approve", "by": "bob@cab", "reason": "green"})
    t.add("run-9", "cutover", "restart_gateways", "started", details={"groups": ["edge"]})
    md = summary_markdown(report_page(tmp_path)[0])
    assert md.splitlines()[2].startswith("**Outcome: INTERRUPTED at cutover/restart\\_gateways**")
    decisions = md.split("## Cutover decisions", 1)[1]
    assert "| carol@cab | reject | ⛔ rejected | freeze |" in decisions
    assert "| bob@cab | approve | ✅ succeeded | green |" in decisions


def test_every_recorded_value_is_escaped(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "pre-migration-findings.csv").write_text(
        f'name,version,provider,validator,message\n"{EVIL}",1.0.0,bob,OpenAPI definition,"{EVIL}"\n'
    )
    audit.append_record(
        tmp_path / "audit.jsonl",
        plan=f"prod {EVIL}",
        plan_digest="ab" * 32,
        phase="schema-upgrade",
        step="apply_sql_script",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=1),
        outcome="failed",
        flow_run_id="run-1",
        actor=EVIL,
        details={"script": f"/srv/{EVIL}.sql", "target": EVIL, "error": f"```\n{EVIL}\n````", "sha256": EVIL},
        gates=[{"gate": EVIL, "database": EVIL, "evaluated": 1, "failed": [EVIL], "success": False}],
    )
    md = summary_markdown(report_page(tmp_path)[0])
    outside_fences = re.sub(r"(`{3,})text\n.*?\n\1", "", md, flags=re.S)
    assert "```" in md and EVIL in md.split("`````text\n", 1)[1]  # the error, verbatim, fenced longer than its ticks
    for raw in ("<script>", "](http", "*bold*", "_x_", "~~s~~", "`code`"):
        assert raw not in outside_fences, raw
    assert not re.search(r"(?<!\\)&amp;", outside_fences)  # shown as the text "&amp;", not as "&"
    assert escape(EVIL) in outside_fences and outside_fences.count(escape(EVIL)) >= 5
    # Rendered (CommonMark with GFM tables, as the Prefect UI does), every value is its literal text.
    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md)
    assert "<script>" not in rendered and "<em>" not in rendered and 'href="http://evil' not in rendered
    assert rendered.count(f"<td>{html.escape(EVIL, quote=False)}</td>") >= 3  # gate, database, failure
    # The page structure survived: headings and one table per section, none broken by a "|" in the data.
    assert _sections(md)[:3] == ["Window", "Phases", "Quality gates"]
    for line in outside_fences.splitlines():
        if line.startswith("| ") and "schema-upgrade/apply" in line:
            assert len(re.findall(r"(?<!\\)\|", line)) == 8  # the gates table: 7 columns


@pytest.mark.usefixtures("prefect_api")
def test_publish_report_leaves_the_summary_on_the_run(tmp_path: Path) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from tasks.report import publish_report

    work = make_work_dir(tmp_path / "work")
    pairs = {r: {"source": f"{r}_src", "target": f"{r}_copy", "owner": "wso2_apim"} for r in ("apim", "shared")}
    (tmp_path / "plan.toml").write_text(tomli_w.dumps({"name": PLAN, "work_dir": str(work), "databases": pairs}))
    plan = load_plan(tmp_path / "plan.toml")

    @flow(name="report-summary-test")
    def parent() -> str:
        return publish_report(plan)

    state = parent(return_state=True)
    path = state.result()
    run_id = state.state_details.flow_run_id

    async def read(key: str) -> list[object]:
        # This run's artifacts only: other tests on this worker publish the same keys.
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
                )
            )
        return [a.data for a in arts]

    summaries = asyncio.run(read("upgrade-summary"))
    assert summaries, "no upgrade-summary artifact"
    md = str(summaries[-1])
    assert md == summary_markdown(report_page(work)[0], path)  # the same view model as the HTML report
    assert "**Outcome: FAILED at schema-upgrade/check\\_conformance**" in md
    assert asyncio.run(read("upgrade-report")), "the link artifact is still there"
