"""The run's summary as Markdown, for the Prefect UI: the story without the HTML report.

Rendered from the report's own view model (``report.report_page``), so both say the same.
Outcome and failure come first, then the window, phases with timings, gates, pre-migration
findings, script history and cutover decisions. Every value from the trail, the plan or the
database is escaped: it is text, never Markdown or HTML. Links of the HTML report are relative
to the work directory, useless in a browser elsewhere: they are shown as names only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from apim_upgrade.proof.audit import AuditRecord
from apim_upgrade.proof.report_traffic import Traffic
from apim_upgrade.proof.report_view import Badge, Code, Link, Page, Pre, Table, ts

MAX_ROWS = 50  # per table; the HTML report has them all
_SIGNIFICANT = re.compile(r"([\\`*_{}\[\]()<>#+!|~&])")
_MARKS = {"failed": "❌ ", "rejected": "⛔ ", "succeeded": "✅ ", "started": "⏳ "}


def escape(text: object) -> str:
    """``text`` as literal Markdown text on one line: every significant character backslash-escaped."""
    return _SIGNIFICANT.sub(r"\\\1", " ".join(str(text).split()))


def _block(text: object) -> str:
    """A fenced block (verbatim, never interpreted), fenced longer than any backtick run inside."""
    body = str(text)
    fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`+", body))])
    return f"{fence}text\n{body}\n{fence}"


def _cell(value: object) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, Badge):
        return _MARKS.get(value.outcome, "") + escape(value.label or value.outcome)
    if isinstance(value, Pre | Code | Link):
        return escape(value.text)
    if isinstance(value, list):
        return "; ".join(_cell(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return escape(value)


def _table(table: Table, drop: Sequence[str] = ("seq",)) -> list[str]:
    keep = [i for i, h in enumerate(table.headers) if h not in drop]
    head = [escape(table.headers[i]) or "result" for i in keep]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if i in table.numeric else "---" for i in keep) + "|",
    ]
    lines += ["| " + " | ".join(_cell(row[i]) for i in keep) + " |" for row in table.rows[:MAX_ROWS]]
    if len(table.rows) > MAX_ROWS:
        lines.append(f"\n{len(table.rows) - MAX_ROWS} more row(s) in the HTML report.")
    return lines


def _step(rec: AuditRecord) -> str:
    return escape(f"{rec.phase}/{rec.step}")


def _outcome(page: Page) -> list[str]:
    s = page.summary
    lines: list[str] = []
    if not s.records:
        return ["**No steps recorded yet.**"]
    if s.outcome.failed:
        last = s.outcome.failed[-1]
        verb = "REJECTED" if last.outcome == "rejected" else "FAILED"
        lines += [f"**Outcome: {verb} at {_step(last)}** (seq {last.seq}, {escape(ts(last.ended_at))})", ""]
        lines += [_block(s.stop_text)]
    elif s.outcome.interrupted:
        last = s.outcome.interrupted[-1]
        lines.append(
            f"**Outcome: INTERRUPTED at {_step(last)}**: started {escape(ts(last.started_at))}, never finished"
        )
    else:
        lines.append(f"**Outcome: succeeded**: every recorded step ended well (last phase: {escape(s.last_phase)})")
    if s.estate_now:
        lines += ["", "**Estate now:**", "", *(f"- {escape(line)}" for line in s.estate_now)]
    if len(s.outcome.failed) > 1:
        lines += ["", "Also not repaired: " + ", ".join(_step(r) for r in s.outcome.failed[:-1])]
    if s.outcome.recovered:
        lines += ["", "Failures repaired by a later run: " + ", ".join(_step(r) for r in s.outcome.recovered)]
    return lines


def _traffic(t: Traffic) -> list[str]:
    """What the estate's clients saw during the run (the plan's traffic ledger), per kind of call."""
    if t.problem:
        return [f"The traffic ledger {escape(t.ledger)} could not be read: {escape(t.problem)}"]
    if not t.rows:
        return [f"No call in the traffic ledger {escape(t.ledger)} during the run."]
    return _table(Table(t.headers, t.rows, numeric=range(1, len(t.headers))), drop=())


def summary_markdown(page: Page, report_path: str | None = None) -> str:
    """The Markdown summary of one run report's view model."""
    s = page.summary
    out = [f"# apim-upgrade run: {escape(page.plan)}", ""]
    out += _outcome(page)
    chain = (
        f"Audit chain **BROKEN** ({len(s.problems)} problem(s)): " + "; ".join(escape(p) for p in s.problems)
        if s.problems
        else f"Audit chain intact: {s.records} record(s), every hash verified."
    )
    out += ["", chain]
    if s.facts:
        out += ["", "## Window", ""] + [f"- **{escape(k or 'note')}**: {_cell(v)}" for k, v in s.facts]
    if page.phases:
        out += ["", "## Phases", "", *_table(page.phases)]
    out += ["", "## Quality gates", ""]
    if page.gates:
        runs = len(page.gates.table.rows)
        out += [f"{runs - page.gates.failed} of {runs} gate run(s) passed, {page.gates.failed} failed.", ""]
        out += _table(page.gates.table)
    else:
        out.append("No quality gate ran.")
    out += ["", "## Pre-migration findings", ""]
    if page.findings:
        out += _table(page.findings.history)
        if page.findings.findings:
            out += ["", *_table(page.findings.findings)]
    else:
        out.append("The pre-migration check has not run.")
    out += ["", "## SQL scripts", ""]
    out += _table(page.scripts.table) if page.scripts else ["No script applied."]
    if page.scripts and page.scripts.rebaselined:
        out += ["", "Accepted as changed: " + ", ".join(escape(r) for r in page.scripts.rebaselined)]
    out += ["", "## Cutover decisions", ""]
    out += _table(page.cutover.decisions) if page.cutover and page.cutover.decisions else ["No cutover in this run."]
    if page.cutover and page.cutover.window:
        out += ["", "## Window", "", *_table(page.cutover.window)]
    if page.traffic is not None:
        out += ["", "## Traffic", "", *_traffic(page.traffic)]
    if report_path:
        out += ["", f"Full report (on the run's host): {escape(report_path)}"]
    return "\n".join(out) + "\n"
