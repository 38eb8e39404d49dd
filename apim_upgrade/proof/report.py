"""The run report: one self-contained HTML page rebuilt from a work directory.

The audit trail is the source of truth; the report only adds what the records
point to (source snapshots, the findings CSV, conformance rows, Data Docs and
logs). This module gathers them into the typed view model of ``report_view``,
which renders the autoescaped Jinja2 template ``templates/report.html.j2``.
Charts are inline SVG and every link is relative and checked to exist, so the
page can be archived or mailed with the work directory. Log files are linked,
never quoted: their contents are not guaranteed to be as carefully masked as
the audit trail.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from apim_upgrade.errors import AuditError
from apim_upgrade.postgres.catalog import Snapshot
from apim_upgrade.proof import audit
from apim_upgrade.proof.audit import AuditRecord
from apim_upgrade.proof.report_charts import Bar, TableCount, row_counts_svg, timeline_svg
from apim_upgrade.proof.report_counts import row_totals
from apim_upgrade.proof.report_estate import estate_now
from apim_upgrade.proof.report_traffic import traffic
from apim_upgrade.proof.report_view import (
    Badge,
    Code,
    Conformance,
    Customisations,
    Cutover,
    DiffFile,
    Findings,
    Gates,
    Link,
    Outcome,
    Page,
    Pre,
    Scripts,
    SourceVsCopy,
    Summary,
    Table,
    chart,
    render,
    ts,
)
from apim_upgrade.runtime.atomic import write_atomically

DATA_DOCS = Path("gx", "uncommitted", "data_docs", "local_site", "index.html")
FINDINGS_CSV = Path("reports", "pre-migration-findings.csv")
TOP_TABLES = 15  # tables in the source-vs-copy chart; all of them are in a collapsed table
MAX_FILE_ROWS = 500  # rows shown from any CSV/JSON a record points to
_DONE = ("succeeded", "skipped")
_STOPS = ("failed", "rejected")  # "rejected": a cutover approval answered no


def _took(rec: AuditRecord) -> str:
    return f"{(rec.ended_at - rec.started_at).total_seconds():.1f}s" if rec.ended_at else ""


def _error(rec: AuditRecord) -> Pre | None:
    return Pre(rec.details["error"]) if "error" in rec.details else None


# --- reading the work directory -------------------------------------------------------


def _read_trail(trail: Path) -> tuple[list[AuditRecord], list[str]]:
    problems = audit.verify_chain(trail)
    try:
        return audit.read_records(trail), problems
    except AuditError:
        # A line that is no record at all is already one of the chain problems:
        # report on every line that still parses rather than on nothing.
        records = []
        for line in trail.read_text(encoding="utf-8").splitlines():
            try:
                records.append(AuditRecord.model_validate_json(line))
            except ValueError:
                continue
        return records, problems


@dataclass
class _Run:
    work_dir: Path
    out_dir: Path
    records: list[AuditRecord]
    problems: list[str]

    def local(self, recorded: object) -> Path | None:
        """The file a record names, inside this work directory (which may have moved since)."""
        if not isinstance(recorded, str) or not recorded:
            return None
        parts = Path(recorded.removeprefix("file://")).parts
        root = self.work_dir.resolve()
        # Longest tail first: /old/host/work/logs/x.log is logs/x.log here.
        for i in range(len(parts)):
            candidate = root.joinpath(*parts[i:]).resolve()
            if candidate.is_file() and candidate.is_relative_to(root):
                return candidate
        return None

    def link(self, path: Path, text: object = None) -> Link:
        path = path.resolve()
        rel = os.path.relpath(path, self.out_dir.resolve()).replace(os.sep, "/")
        if text is None:  # name it as it sits in the work directory, the operator's frame of reference
            text = path.relative_to(self.work_dir) if path.is_relative_to(self.work_dir) else path.name
        return Link(quote(rel), text)

    def steps(self, *names: str) -> list[AuditRecord]:
        return [r for r in self.records if r.step in names]


def _rows_of(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV, or of a JSON list (or {"rows"|"differences": [...]}); unreadable: none."""
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                return list(csv.DictReader(fh))
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, csv.Error):
        return []
    if isinstance(data, dict):
        data = data.get("rows", data.get("differences", []))
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def _rows_table(rows: list[dict[str, Any]]) -> Table:
    headers = list(dict.fromkeys(k for r in rows[:MAX_FILE_ROWS] for k in r))
    return Table(headers, [[r.get(h) for h in headers] for r in rows[:MAX_FILE_ROWS]])


# --- outcome ----------------------------------------------------------------------------


def _outcome(records: list[AuditRecord]) -> Outcome:
    failed: list[AuditRecord] = []
    recovered: list[AuditRecord] = []
    later_ok: set[tuple[str, str]] = set()
    for rec in reversed(records):
        key = (rec.phase, rec.step)
        if rec.outcome in _DONE:
            later_ok.add(key)
        elif rec.outcome in _STOPS:
            (recovered if key in later_ok else failed).append(rec)
    return Outcome(failed[::-1], recovered[::-1], _interrupted(records))


def _interrupted(records: list[AuditRecord]) -> list[AuditRecord]:
    # An intent and its outcome share phase, step and start time (one audited_step).
    finished = {(r.phase, r.step, r.started_at) for r in records if r.outcome != "started"}
    return [r for r in records if r.outcome == "started" and (r.phase, r.step, r.started_at) not in finished]


# --- sections ---------------------------------------------------------------------------


def _summary(run: _Run, outcome: Outcome) -> Summary:
    recs = run.records
    if not recs:
        return Summary(run.problems, 0, outcome, "", "", [], Table([], []))
    digests = list(dict.fromkeys(r.plan_digest for r in recs))
    facts: list[tuple[str, object]] = [
        ("plan", ", ".join(dict.fromkeys(r.plan for r in recs))),
        ("plan digest", [Code(d) for d in digests]),
        ("", "the plan file changed between runs" if len(digests) > 1 else None),
        ("actors", ", ".join(dict.fromkeys(r.actor for r in recs))),
        ("flow runs", len(dict.fromkeys(r.flow_run_id for r in recs))),
        ("first start", ts(min(r.started_at for r in recs))),
        ("last end", ts(max(r.ended_at or r.started_at for r in recs))),
    ]
    facts = [(k, v) for k, v in facts if v is not None]
    stop = _stop_text(outcome.failed[-1]) if outcome.failed else ""
    return Summary(
        run.problems, len(recs), outcome, stop, recs[-1].phase, facts, _flow_runs(recs), tuple(estate_now(recs))
    )


def _stop_text(rec: AuditRecord) -> str:
    d = rec.details
    if "error" in d:
        return str(d["error"])
    if "decision" in d:
        return f"{d['decision']} by {d.get('by') or rec.actor}: {d.get('reason') or '(no reason given)'}"
    return "(no error text recorded)"


def _flow_runs(records: list[AuditRecord]) -> Table:
    runs: dict[str | None, list[AuditRecord]] = {}
    for r in records:
        runs.setdefault(r.flow_run_id, []).append(r)
    rows = []
    for run_id, recs in runs.items():
        state = next((r.outcome for r in recs if r.outcome in _STOPS), "succeeded")
        state = "started" if state == "succeeded" and _interrupted(recs) else state
        end = max(r.ended_at or r.started_at for r in recs)
        rows.append([Code(run_id or "-"), _ran(recs), ts(recs[0].started_at), ts(end), len(recs), Badge(state)])
    return Table(["flow run", "phases", "first start", "last end", "records", ""], rows)


def _ran(recs: list[AuditRecord]) -> str:
    """The phases a run did something in; those it only found done are named as skipped."""
    ran = list(dict.fromkeys(r.phase for r in recs if r.outcome != "skipped"))
    skipped = [p for p in dict.fromkeys(r.phase for r in recs) if p not in ran]
    label = ", ".join(ran) or "nothing"
    return label + (f" (skipped: {', '.join(skipped)})" if skipped else "")


def _phases(run: _Run, outcome: Outcome) -> Table | None:
    """One row per phase, in the order they first ran: when, how long its steps took, how it stands."""
    phases: dict[str, list[AuditRecord]] = {}
    for r in run.records:
        phases.setdefault(r.phase, []).append(r)
    failed = {r.phase for r in outcome.failed}
    interrupted = {r.phase for r in outcome.interrupted}
    rows: list[list[object]] = []
    for phase, recs in phases.items():
        done = [r for r in recs if r.outcome != "started"]
        busy = sum((r.ended_at - r.started_at).total_seconds() for r in done if r.ended_at)
        state = "failed" if phase in failed else "started" if phase in interrupted else "succeeded"
        state = "skipped" if state == "succeeded" and all(r.outcome == "skipped" for r in done) else state
        end = max(r.ended_at or r.started_at for r in recs)
        rows.append([phase, ts(recs[0].started_at), ts(end), f"{busy:.1f}s", len(done), Badge(state)])
    headers = ["phase", "first start", "last end", "time in steps", "step runs", ""]
    return Table(headers, rows, (3, 4)) if rows else None


def _timeline(run: _Run) -> Markup | None:
    intents = set(map(id, _interrupted(run.records)))
    last = max((r.ended_at or r.started_at for r in run.records), default=None)
    bars = [
        Bar(r.phase, r.step, r.started_at, r.ended_at or last or r.started_at, r.outcome)
        for r in run.records
        if r.outcome != "started" or id(r) in intents  # an answered intent is drawn by its outcome
    ]
    if not bars:
        return None
    alt = f"Timeline of {len(bars)} step run(s) in {len({b.phase for b in bars})} phase(s)"
    return chart(timeline_svg(bars, alt))


def _gates(run: _Run) -> Gates | None:
    rows = []
    for r in run.records:
        for g in r.gates:
            failed = [str(f) for f in g.get("failed") or []]
            ok = g.get("success", not failed)
            rows.append([r.seq, f"{r.phase}/{r.step}", g.get("gate"), g.get("database"), g.get("evaluated")])
            rows[-1] += [len(failed), Badge("succeeded" if ok else "failed"), [Pre(f, "fail") for f in failed]]
    if not rows:
        return None
    headers = ["seq", "step", "gate", "database", "evaluated", "failed", "", "failures"]
    return Gates(Table(headers, rows, (0, 4, 5)), sum(1 for row in rows if row[5]))


_PAIR = re.compile(r"(\w+)=([^,;]*)")


def _copy_counts(rec: AuditRecord, source: dict[str, int]) -> dict[str, int | None]:
    """Copy rows per table: equal where the gate passed it, else what its failure says (or unknown)."""
    if "mismatched_tables" not in rec.details:
        return dict.fromkeys(source)  # failed before comparing: nothing known about the copy
    mismatched = set(rec.details["mismatched_tables"])
    counts: dict[str, int | None] = {t: (None if t in mismatched else n) for t, n in source.items()}
    for gate in rec.gates:
        for failure in gate.get("failed") or []:
            for part in str(failure).split(": ", 1)[-1].split("; "):
                pairs = dict(_PAIR.findall(part))
                table, actual = pairs.get("table_name", "").strip(), pairs.get("actual_rows", "").strip()
                if table in counts and actual.isdigit():
                    counts[table] = int(actual)
    return counts


def _source_vs_copy(run: _Run) -> SourceVsCopy | None:
    snaps = sorted((run.work_dir / "snapshots").glob("*-source.json"))
    if not snaps:
        return None
    validations = {str(r.details.get("role")): r for r in run.steps("validate_copy")}
    totals: list[list[object]] = []
    everything: list[TableCount] = []
    problems = []
    for path in snaps:
        role = path.name.removesuffix("-source.json")
        try:
            snap = Snapshot.load(path)
        except (OSError, ValueError) as exc:
            problems.append(Pre(f"{path.name}: unreadable ({exc.__class__.__name__})"))
            continue
        rec = validations.get(role)
        copy = _copy_counts(rec, snap.row_counts) if rec else dict.fromkeys(snap.row_counts)
        known = [n for n in copy.values() if n is not None]
        differ = [t for t, n in snap.row_counts.items() if copy[t] != n]
        target = rec.details.get("target") if rec else None
        totals.append([role, snap.database, target, len(snap.row_counts), snap.total_rows])
        totals[-1] += [sum(known) if len(known) == len(copy) else None, len(differ)]
        totals[-1].append(Badge(rec.outcome) if rec else "not validated")
        everything += [TableCount(f"{role}: {t}", n, copy[t]) for t, n in snap.row_counts.items()]
    headers = ["role", "source", "copy", "tables", "source rows", "copy rows", "differing", "gate"]
    largest = sorted(everything, key=lambda t: -t.source)[:TOP_TABLES]
    differing = [(t.label, t.source, t.copy) for t in everything if t.copy != t.source]
    rows = [(t.label, t.source, t.copy, "ok" if t.copy == t.source else "differs") for t in everything]
    svg = row_counts_svg(largest, f"Source vs copy rows of the {len(largest)} largest tables") if largest else None
    return SourceVsCopy(
        Table(headers, totals, (3, 4, 5, 6)),
        problems,
        chart(svg) if svg else None,
        Table(["table", "source rows", "copy rows"], differing, (1, 2)) if differing else None,
        Table(["table", "source rows", "copy rows", ""], rows, (1, 2)) if rows else None,
    )


def _findings(run: _Run) -> Findings | None:
    recs = run.steps("report_findings")
    latest = recs[-1].details if recs else {}
    accepted, blocking = set(latest.get("accepted_present", [])), set(latest.get("blocking", []))
    path = run.local(latest.get("csv")) or run.local(str(FINDINGS_CSV))
    findings = _rows_of(path) if path else []
    if not recs and not findings:
        return None
    history = [
        [r.seq, ts(r.ended_at), Badge(r.outcome), r.details.get("findings"), *_accepted_blocking(r.details)]
        for r in recs
    ]
    rows = []
    for f in findings:
        key = f"{f.get('name')}:{f.get('version')}:{f.get('provider')}"
        status = "blocking" if key in blocking else "accepted" if key in accepted else ""
        rows.append([f.get("name"), f.get("version"), f.get("provider"), f.get("validator"), f.get("message")])
        rows[-1].append(Badge(status or "none", status or "-"))
    return Findings(
        Table(["seq", "when", "outcome", "findings", "accepted", "blocking"], history, (0, 3, 4, 5)),
        Table(["API", "version", "provider", "validator", "message", "status"], rows) if rows else None,
        run.link(path, "findings CSV") if path else None,
    )


def _accepted_blocking(details: dict[str, Any]) -> tuple[int, int]:
    return len(details.get("accepted_present", [])), len(details.get("blocking", []))


def _scripts(run: _Run) -> Scripts | None:
    rows = []
    for r in run.steps("apply_sql_script"):
        d = r.details
        rows.append([r.seq, ts(r.started_at), Badge(r.outcome), Path(str(d.get("script", ""))).name])
        rows[-1] += [f"{d.get('from_version', '?')} → {d.get('to_version', '?')}", Code(d.get("sha256", ""))]
        rows[-1] += [d.get("statements"), f"{d['duration_ms']} ms" if "duration_ms" in d else None]
        rows[-1] += [d.get("target"), _error(r)]
    if not rows:
        return None
    headers = ["seq", "applied", "outcome", "script", "versions", "sha256", "statements", "duration", "database"]
    rebaselined = [s for r in run.steps("check_script_history") for s in r.details.get("rebaselined", [])]
    return Scripts(Table([*headers, "error"], rows, (0, 6, 7)), rebaselined)


def _conformance(run: _Run) -> Conformance | None:
    recs = run.steps("check_conformance")
    if not recs:
        return None
    rows = []
    for r in recs:
        gates = ", ".join(f"{g.get('gate')}: {'pass' if g.get('success') else 'FAIL'}" for g in r.gates)
        stage = r.details.get("stage") or ""
        left = ", ".join(
            f"{k} ({why})" for k, why in dict(r.details.get("fixed_by_first_start") or {}).items()
        )  # before the start: what the plan says 4.4.0 fixes itself when it first starts
        rows.append([r.seq, r.phase, r.details.get("label"), stage, Badge(r.outcome), r.details.get("differences")])
        rows[-1] += [r.details.get("unaccepted"), left, gates, _error(r)]
    headers = ["seq", "phase", "reference", "check", "outcome", "differences", "unaccepted"]
    headers += ["left to 4.4.0's first start", "gates", "error"]
    found = {run.local(r.details.get(k)) for r in recs for k in ("csv", "json", "file")}
    reports = run.work_dir / "reports"
    found |= {*reports.glob("conformance*.csv"), *reports.glob("conformance*.json")}
    files = []
    for path in sorted(p.resolve() for p in found if p):
        diffs = _rows_of(path)
        files.append(DiffFile(run.link(path, path.name), len(diffs), _rows_table(diffs)))
    return Conformance(Table(headers, rows, (0, 5, 6)), files)


def _customisations(run: _Run) -> Customisations | None:
    """Every customisation the last source check recorded, and what the last final check found of it."""
    source = [r for r in run.steps("check_conformance") if isinstance(r.details.get("customisations"), list)]
    if not source or not source[-1].details["customisations"]:
        return None
    items = [c for c in source[-1].details["customisations"] if isinstance(c, dict)]
    final = [r for r in run.steps("check_conformance") if isinstance(r.details.get("extra_objects"), list)]
    at_end: dict[str, str] = {}
    if final:
        at_end = {
            str(e.get("key")): str(e.get("status")) for e in final[-1].details["extra_objects"] if isinstance(e, dict)
        }
    rows = []
    for c in items:
        fate = "accepted: a step may drop it" if c.get("accepted") else "carried through: must survive every step"
        end = at_end.get(str(c.get("key")), "not found by the final check" if final else None)
        rows.append([c.get("database"), Code(c.get("object")), Code(c.get("key")), c.get("detail"), fate, end])
    headers = ["source", "object", "plan key", "definition", "plan", "at the final check"]
    accepted = sum(1 for c in items if c.get("accepted"))
    return Customisations(Table(headers, rows), len(items), accepted)


def _cutover(run: _Run) -> Cutover | None:
    decisions = [r for r in run.records if "decision" in r.details or "approval" in r.step or "decision" in r.step]
    steps = [r for r in run.records if r.phase in ("window", "cutover", "rollback", "rehearsal") and r not in decisions]
    if not decisions and not steps:
        return None
    rows = []
    for r in decisions:
        d = r.details
        who = d.get("by") or d.get("approver") or r.actor
        rows.append([r.seq, ts(r.ended_at or r.started_at), f"{r.phase}/{r.step}", who, d.get("decision")])
        rows[-1] += [Badge(r.outcome), d.get("reason") or d.get("error"), r.actor]
    headers = ["seq", "when", "step", "who", "decision", "outcome", "reason", "recorded by"]
    step_rows = [
        [r.seq, ts(r.started_at), f"{r.phase}/{r.step}", r.details.get("node"), Badge(r.outcome), _node_state(r)]
        for r in steps
    ]
    for row, r in zip(step_rows, steps, strict=True):
        row += [_took(r), _error(r)]
    step_headers = ["seq", "started", "step", "node", "outcome", "state", "took", "error"]
    return Cutover(
        Table(headers, rows, (0,)) if rows else None,
        Table(step_headers, step_rows, (0,)) if step_rows else None,
        _window(run),
    )


def _node_state(rec: AuditRecord) -> object:
    """What a node step found or did ("started", "already running", "already down", ...), per gateway node."""
    if isinstance(rec.details.get("state"), str):
        return rec.details["state"]
    nodes = [n for n in rec.details.get("nodes") or [] if isinstance(n, dict) and "state" in n]
    return [f"{n.get('node') or n.get('name')}: {n['state']}" for n in nodes] or None


def _window(run: _Run) -> Table | None:
    """The window forecast at the approval, the window measured, and each gateway's time out of service."""
    rows: list[list[object]] = []
    for r in run.steps("forecast_window")[-1:]:
        d = r.details
        source = f"from {d.get('rehearsal')}, data-bound phases ×{d.get('growth')}" if d.get("rehearsal") else ""
        rows.append(
            ["forecast (at the approval)", d.get("total_s") if d.get("rehearsal") else None, source or "no rehearsal"]
        )
    for r in run.steps("window_measured")[-1:]:
        d = r.details
        rows.append(
            [
                "measured: 4.0.0 stopped → 4.4.0 healthy",
                d.get("window_s"),
                f"{d.get('stopped_400_at')} → {d.get('healthy_440_at')}",
            ]
        )
    for r in run.steps("restart_gateways")[-1:]:
        for n in r.details.get("nodes") or []:
            if isinstance(n, dict):
                rows.append(
                    [
                        f"gateway {n.get('group')}/{n.get('node')} out of service",
                        n.get("out_of_service_s"),
                        n.get("state"),
                    ]
                )
    return Table(["window", "seconds", "detail"], rows, (1,)) if rows else None


def _files(run: _Run) -> Table | None:
    items = [
        (run.work_dir / DATA_DOCS, "Great Expectations Data Docs"),
        (run.work_dir / "audit.jsonl", "audit trail (hash-chained JSONL)"),
        (run.work_dir / FINDINGS_CSV, "pre-migration findings"),
    ]
    items += [(p, "source snapshot") for p in sorted((run.work_dir / "snapshots").glob("*.json"))]
    log_phase = {run.local(r.details.get("log_file")): r.phase for r in run.records if "log_file" in r.details}
    logs = sorted((run.work_dir / "logs").glob("*.log"))
    items += [(p, f"log of {log_phase.get(p.resolve(), 'a JVM run')}") for p in logs]
    rows = [[run.link(p), what, p.stat().st_size] for p, what in items if p.is_file()]
    return Table(["file", "what", "bytes"], rows, (2,)) if rows else None


def _records(run: _Run) -> Table | None:
    rows = []
    for r in run.records:
        target = r.details.get("target") or r.details.get("source") or ""
        rows.append([r.seq, ts(r.started_at), r.phase, r.step, target, Badge(r.outcome), _took(r), r.actor])
        rows[-1] += [(r.flow_run_id or "-")[:8], _error(r)]
    headers = ["seq", "started", "phase", "step", "database", "outcome", "took", "actor", "run", "error"]
    return Table(headers, rows, (0, 6)) if rows else None


# --- the page ---------------------------------------------------------------------------


def build_report(work_dir: Path, out: Path | None = None, traffic_ledger: Path | None = None) -> Path:
    """Write the run report of ``work_dir`` (default ``reports/report.html`` inside it); return its path."""
    page, out = report_page(work_dir, out, traffic_ledger)
    return write_report(page, out)


def report_page(work_dir: Path, out: Path | None = None, traffic_ledger: Path | None = None) -> tuple[Page, Path]:
    """The report's view model of ``work_dir`` and where its page goes (links are relative to it).

    ``traffic_ledger``: the plan's ``[report] traffic_ledger``, charted in the cutover section.

    The HTML page and the Prefect summary (report_markdown) are both rendered from it.
    """
    work_dir = Path(work_dir).resolve()
    trail = work_dir / "audit.jsonl"
    if not trail.is_file():
        raise AuditError(f"{trail}: no audit trail here; give the work directory of a run (or its plan.toml)")
    out = Path(out) if out is not None else work_dir / "reports" / "report.html"
    with audit.trail_lock(trail):  # a whole trail: never between an append's write and its end
        records, problems = _read_trail(trail)
    run = _Run(work_dir, out.parent, records, problems)
    outcome = _outcome(records)
    page = Page(
        plan=", ".join(dict.fromkeys(r.plan for r in records)) or work_dir.name,
        work_dir=work_dir,
        summary=_summary(run, outcome),
        phases=_phases(run, outcome),
        customisations=_customisations(run),
        timeline=_timeline(run),
        gates=_gates(run),
        checkpoints=row_totals(run.records),
        source_vs_copy=_source_vs_copy(run),
        findings=_findings(run),
        scripts=_scripts(run),
        conformance=_conformance(run),
        cutover=_cutover(run),
        files=_files(run),
        records=_records(run),
        traffic=traffic(traffic_ledger, records),
    )
    return page, out


def write_report(page: Page, out: Path) -> Path:
    """Render ``page`` to ``out``, atomically; return ``out``."""
    return write_atomically(out, render(page))  # a reader never sees half a report


def report_command(path: Path) -> Path:
    """Build the report for a work directory, its audit.jsonl, a plan.toml or a sandbox holding one."""
    path = Path(path)
    if path.is_dir() and not (path / "audit.jsonl").exists() and (path / "plan.toml").is_file():
        path = path / "plan.toml"
    if path.is_file() and path.suffix == ".toml":
        from apim_upgrade.plan import load_plan  # only this form needs the plan model

        plan = load_plan(path)
        return build_report(plan.work_dir, traffic_ledger=plan.report.traffic_ledger)
    if path.is_file() and path.name == "audit.jsonl":
        return build_report(path.parent)
    if path.is_dir():
        return build_report(path)
    raise AuditError(f"{path}: give a work directory, its audit.jsonl or the plan.toml of the run to report on")
