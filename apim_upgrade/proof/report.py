"""The run report: one self-contained HTML page rebuilt from a work directory.

The audit trail is the source of truth; the report only adds what the records
point to (source snapshots, the findings CSV, conformance rows, Data Docs and
logs). Everything is escaped, charts are inline SVG and every link is
relative and checked to exist, so the page can be archived or mailed with the
work directory. Log files are linked, never quoted: their contents are not
guaranteed to be as carefully masked as the audit trail.
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from apim_upgrade.errors import AuditError
from apim_upgrade.postgres.catalog import Snapshot
from apim_upgrade.proof import audit
from apim_upgrade.proof.audit import AuditRecord
from apim_upgrade.proof.report_charts import Bar, TableCount, row_counts_svg, timeline_svg

DATA_DOCS = Path("gx", "gx", "uncommitted", "data_docs", "local_site", "index.html")
FINDINGS_CSV = Path("reports", "pre-migration-findings.csv")
TOP_TABLES = 15  # tables in the source-vs-copy chart; all of them are in a collapsed table
MAX_FILE_ROWS = 500  # rows shown from any CSV/JSON a record points to
_DONE = ("succeeded", "skipped")
_STOPS = ("failed", "rejected")  # "rejected": a cutover approval answered no


class Html(str):
    """Markup that is already escaped: the only text the helpers below pass through as is."""


def _e(value: object) -> Html:
    return Html(html.escape(str(value), quote=True))


def _cell(value: object) -> str:
    if isinstance(value, Html):
        return value
    if value is None or value == "":
        return '<span class="muted">-</span>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return _e(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Iterable[int] = ()) -> Html:
    num = set(numeric)
    head = "".join(f"<th{' class=num' if i in num else ''}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in num else ''}>{_cell(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _pre(text: object, cls: str = "err") -> Html:
    return Html(f'<pre class="{cls}">{_e(text)}</pre>')


def _badge(outcome: str) -> Html:
    return Html(f'<span class="badge {_e(outcome)}">{_e(outcome)}</span>')


def _ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if value else ""


def _took(rec: AuditRecord) -> str:
    return f"{(rec.ended_at - rec.started_at).total_seconds():.1f}s" if rec.ended_at else ""


def _chart(svg: str) -> Html:
    return Html(svg)  # report_charts escapes every text it writes into the markup


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

    def link(self, path: Path | None, text: object = None) -> Html:
        if path is None or not path.is_file():
            return _e(text) if text else Html("")
        path = path.resolve()
        rel = os.path.relpath(path, self.out_dir.resolve()).replace(os.sep, "/")
        if text is None:  # name it as it sits in the work directory, the operator's frame of reference
            text = path.relative_to(self.work_dir) if path.is_relative_to(self.work_dir) else path.name
        return Html(f'<a href="{_e(quote(rel))}">{_e(text)}</a>')

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


def _rows_table(rows: list[dict[str, Any]]) -> Html:
    headers = list(dict.fromkeys(k for r in rows[:MAX_FILE_ROWS] for k in r))
    more = f'<p class="muted">first {MAX_FILE_ROWS} of {len(rows):,} rows</p>' if len(rows) > MAX_FILE_ROWS else ""
    return Html(_table(headers, ([r.get(h) for h in headers] for r in rows[:MAX_FILE_ROWS])) + more)


# --- outcome ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    failed: list[AuditRecord]  # failures (and rejections) no later run of the same step repaired
    recovered: list[AuditRecord]
    interrupted: list[AuditRecord]  # intents ("started") never followed by their outcome


def _outcome(records: list[AuditRecord]) -> _Outcome:
    failed: list[AuditRecord] = []
    recovered: list[AuditRecord] = []
    later_ok: set[tuple[str, str]] = set()
    for rec in reversed(records):
        key = (rec.phase, rec.step)
        if rec.outcome in _DONE:
            later_ok.add(key)
        elif rec.outcome in _STOPS:
            (recovered if key in later_ok else failed).append(rec)
    return _Outcome(failed[::-1], recovered[::-1], _interrupted(records))


def _interrupted(records: list[AuditRecord]) -> list[AuditRecord]:
    # An intent and its outcome share phase, step and start time (one audited_step).
    finished = {(r.phase, r.step, r.started_at) for r in records if r.outcome != "started"}
    return [r for r in records if r.outcome == "started" and (r.phase, r.step, r.started_at) not in finished]


# --- sections ---------------------------------------------------------------------------


def _summary(run: _Run, outcome: _Outcome) -> Html:
    recs = run.records
    if run.problems:
        chain = (
            '<div class="banner bad"><b>Audit chain BROKEN</b> - the trail was edited, truncated or reordered; '
            "nothing below can be trusted until it is restored from its database copy:"
            + "<ul>"
            + "".join(f"<li>{_e(p)}</li>" for p in run.problems)
            + "</ul></div>"
        )
    else:
        chain = f'<div class="banner ok"><b>Audit chain intact</b>: {len(recs)} record(s), every hash verified</div>'
    if not recs:
        return Html(chain + '<div class="banner warn">No steps recorded yet.</div>')
    if outcome.failed:
        last = outcome.failed[-1]
        verb = "Rejected" if last.outcome == "rejected" else "Failed"
        result = (
            f'<div class="banner bad"><b>{verb} at {_e(last.phase)}/{_e(last.step)}</b> '
            f"(seq {last.seq}, {_e(_ts(last.ended_at))})" + _pre(_stop_text(last)) + "</div>"
        )
    elif outcome.interrupted:
        last = outcome.interrupted[-1]
        result = (
            f'<div class="banner warn"><b>Interrupted at {_e(last.phase)}/{_e(last.step)}</b>: '
            f"started {_e(_ts(last.started_at))} (seq {last.seq}) and never finished</div>"
        )
    else:
        last_phase = _e(recs[-1].phase)
        result = f'<div class="banner ok"><b>Succeeded</b>: every recorded step ended well (last: {last_phase})</div>'
    if len(outcome.failed) > 1:
        result += Html(
            '<p class="muted">Also not repaired: '
            + ", ".join(f"{_e(r.phase)}/{_e(r.step)} (seq {r.seq})" for r in outcome.failed[:-1])
            + "</p>"
        )
    if outcome.recovered:
        result += Html(
            '<p class="muted">Failures repaired by a later run: '
            + ", ".join(f"{_e(r.phase)}/{_e(r.step)} (seq {r.seq})" for r in outcome.recovered)
            + "</p>"
        )
    digests = list(dict.fromkeys(r.plan_digest for r in recs))
    facts = [
        ("plan", ", ".join(dict.fromkeys(r.plan for r in recs))),
        ("plan digest", Html("<br>".join(f"<code>{_e(d)}</code>" for d in digests))),
        ("", "the plan file changed between runs" if len(digests) > 1 else None),
        ("actors", ", ".join(dict.fromkeys(r.actor for r in recs))),
        ("flow runs", len(dict.fromkeys(r.flow_run_id for r in recs))),
        ("first start", _ts(min(r.started_at for r in recs))),
        ("last end", _ts(max(r.ended_at or r.started_at for r in recs))),
    ]
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_cell(v)}</td></tr>" for k, v in facts if v is not None)
    return Html(chain + result + f'<table class="facts">{rows}</table>' + _flow_runs(recs))


def _stop_text(rec: AuditRecord) -> str:
    d = rec.details
    if "error" in d:
        return str(d["error"])
    if "decision" in d:
        return f"{d['decision']} by {d.get('by') or rec.actor}: {d.get('reason') or '(no reason given)'}"
    return "(no error text recorded)"


def _flow_runs(records: list[AuditRecord]) -> Html:
    runs: dict[str | None, list[AuditRecord]] = {}
    for r in records:
        runs.setdefault(r.flow_run_id, []).append(r)
    rows = []
    for run_id, recs in runs.items():
        state = next((r.outcome for r in recs if r.outcome in _STOPS), "succeeded")
        state = "started" if state == "succeeded" and _interrupted(recs) else state
        phases = ", ".join(dict.fromkeys(r.phase for r in recs))
        end = max(r.ended_at or r.started_at for r in recs)
        rows.append([Html(f"<code>{_e(run_id or '-')}</code>"), phases, _ts(recs[0].started_at), _ts(end), len(recs)])
        rows[-1].append(_badge(state))
    return Html("<h3>Flow runs</h3>" + _table(["flow run", "phases", "first start", "last end", "records", ""], rows))


def _timeline(run: _Run) -> Html:
    intents = set(map(id, _interrupted(run.records)))
    last = max((r.ended_at or r.started_at for r in run.records), default=None)
    bars = [
        Bar(r.phase, r.step, r.started_at, r.ended_at or last or r.started_at, r.outcome)
        for r in run.records
        if r.outcome != "started" or id(r) in intents  # an answered intent is drawn by its outcome
    ]
    if not bars:
        return Html('<p class="muted">No steps recorded.</p>')
    alt = f"Timeline of {len(bars)} step run(s) in {len({b.phase for b in bars})} phase(s)"
    return _chart(timeline_svg(bars, alt))


def _gates(run: _Run) -> Html:
    rows = []
    for r in run.records:
        for g in r.gates:
            failed = [str(f) for f in g.get("failed") or []]
            ok = g.get("success", not failed)
            listing = Html("<br>".join(_pre(f, "fail") for f in failed)) if failed else ""
            rows.append([r.seq, f"{r.phase}/{r.step}", g.get("gate"), g.get("database"), g.get("evaluated")])
            rows[-1] += [len(failed), _badge("succeeded" if ok else "failed"), listing]
    if not rows:
        return Html('<p class="muted">No quality gate ran.</p>')
    bad = sum(1 for row in rows if row[5])
    head = f"<p>{len(rows)} gate run(s), {bad} with failed expectations.</p>"
    return Html(
        head + _table(["seq", "step", "gate", "database", "evaluated", "failed", "", "failures"], rows, (0, 4, 5))
    )


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


def _row_counts(run: _Run) -> Html:
    return Html(_checkpoints(run) + "<h3>Source vs copy (prepare-databases)</h3>" + _source_vs_copy(run))


def _checkpoints(run: _Run) -> Html:
    role_of = {
        str(r.details["target"]): str(r.details.get("role"))
        for r in run.steps("copy_database")
        if "target" in r.details
    }
    rows: list[list[object]] = []
    last: dict[str, int] = {}

    def add(rec: AuditRecord, label: str, role: str, database: object, tables: object, total: object) -> None:
        delta = total - last[role] if isinstance(total, int) and role in last else None
        if isinstance(total, int):
            last[role] = total
        rows.append([rec.seq, rec.phase, label, role, database, tables, total, f"{delta:+,}" if delta else delta])

    for r in run.steps("snapshot_source", "snapshot_targets", "snapshot_target"):
        d = r.details
        if r.step == "snapshot_source":
            add(r, "source snapshot", str(d.get("role")), d.get("source"), d.get("tables"), d.get("total_rows"))
        elif r.step == "snapshot_target":
            target = str(d.get("target"))
            add(
                r,
                str(d.get("checkpoint", "")),
                role_of.get(target, target),
                target,
                d.get("tables"),
                d.get("total_rows"),
            )
        else:
            for role in ("apim", "shared"):
                if f"{role}_rows" in d:
                    add(r, f"before {r.phase}", role, None, None, d[f"{role}_rows"])
    if not rows:
        return Html("")
    headers = ["seq", "phase", "checkpoint", "role", "database", "tables", "total rows", "change"]
    return Html("<h3>Row totals at each checkpoint</h3>" + _table(headers, rows, (0, 5, 6, 7)))


def _source_vs_copy(run: _Run) -> Html:
    snaps = sorted((run.work_dir / "snapshots").glob("*-source.json"))
    if not snaps:
        return Html('<p class="muted">No source snapshot in this work directory.</p>')
    validations = {str(r.details.get("role")): r for r in run.steps("validate_copy")}
    totals, everything, problems = [], [], []
    for path in snaps:
        role = path.name.removesuffix("-source.json")
        try:
            snap = Snapshot.load(path)
        except (OSError, ValueError) as exc:
            problems.append(f"{path.name}: unreadable ({exc.__class__.__name__})")
            continue
        rec = validations.get(role)
        copy = _copy_counts(rec, snap.row_counts) if rec else dict.fromkeys(snap.row_counts)
        known = [n for n in copy.values() if n is not None]
        differ = [t for t, n in snap.row_counts.items() if copy[t] != n]
        target = rec.details.get("target") if rec else None
        totals.append([role, snap.database, target, len(snap.row_counts), snap.total_rows])
        totals[-1] += [sum(known) if len(known) == len(copy) else None, len(differ)]
        totals[-1].append(_badge(rec.outcome) if rec else "not validated")
        everything += [TableCount(f"{role}: {t}", n, copy[t]) for t, n in snap.row_counts.items()]
    headers = ["role", "source", "copy", "tables", "source rows", "copy rows", "differing", "gate"]
    parts = [_table(headers, totals, (3, 4, 5, 6))] + [_pre(p) for p in problems]
    if everything:
        largest = sorted(everything, key=lambda t: -t.source)[:TOP_TABLES]
        parts.append(_chart(row_counts_svg(largest, f"Source vs copy rows of the {len(largest)} largest tables")))
        differing = [t for t in everything if t.copy != t.source]
        if differing:
            parts.append(Html("<h4>Tables whose copy differs or is unknown</h4>"))
            parts.append(
                _table(["table", "source rows", "copy rows"], ((t.label, t.source, t.copy) for t in differing), (1, 2))
            )
        rows = ((t.label, t.source, t.copy, "ok" if t.copy == t.source else "differs") for t in everything)
        table = _table(["table", "source rows", "copy rows", ""], rows, (1, 2))
        parts.append(Html(f"<details><summary>All {len(everything):,} tables</summary>{table}</details>"))
    return Html("".join(parts))


def _findings(run: _Run) -> Html:
    recs = run.steps("report_findings")
    latest = recs[-1].details if recs else {}
    accepted, blocking = set(latest.get("accepted_present", [])), set(latest.get("blocking", []))
    path = run.local(latest.get("csv")) or run.local(str(FINDINGS_CSV))
    findings = _rows_of(path) if path else []
    if not recs and not findings:
        return Html('<p class="muted">No pre-migration validation in this run.</p>')
    history = [
        [r.seq, _ts(r.ended_at), _badge(r.outcome), r.details.get("findings"), *_accepted_blocking(r.details)]
        for r in recs
    ]
    parts = [_table(["seq", "when", "outcome", "findings", "accepted", "blocking"], history, (0, 3, 4, 5))]
    rows = []
    for f in findings:
        key = f"{f.get('name')}:{f.get('version')}:{f.get('provider')}"
        status = "blocking" if key in blocking else "accepted" if key in accepted else ""
        rows.append([f.get("name"), f.get("version"), f.get("provider"), f.get("validator"), f.get("message")])
        rows[-1].append(Html(f'<span class="badge {status or "none"}">{status or "-"}</span>'))
    if rows:
        parts.append(_table(["API", "version", "provider", "validator", "message", "status"], rows))
    if path:
        parts.append(Html(f"<p>{run.link(path, 'findings CSV')}</p>"))
    return Html("".join(parts))


def _accepted_blocking(details: dict[str, Any]) -> tuple[int, int]:
    return len(details.get("accepted_present", [])), len(details.get("blocking", []))


def _scripts(run: _Run) -> Html:
    rows = []
    for r in run.steps("apply_sql_script"):
        d = r.details
        err = _pre(d["error"]) if "error" in d else ""
        rows.append([r.seq, _ts(r.started_at), _badge(r.outcome), Path(str(d.get("script", ""))).name])
        rows[-1] += [
            f"{d.get('from_version', '?')} → {d.get('to_version', '?')}",
            Html(f"<code>{_e(d.get('sha256', ''))}</code>"),
        ]
        rows[-1] += [
            d.get("statements"),
            f"{d['duration_ms']} ms" if "duration_ms" in d else None,
            d.get("target"),
            err,
        ]
    rebaselined = [s for r in run.steps("check_script_history") for s in r.details.get("rebaselined", [])]
    if not rows:
        return Html('<p class="muted">No SQL script was applied.</p>')
    headers = [
        "seq",
        "applied",
        "outcome",
        "script",
        "versions",
        "sha256",
        "statements",
        "duration",
        "database",
        "error",
    ]
    note = (
        f'<p class="banner warn">Re-baselined (accepted as changed): {_e(", ".join(rebaselined))}</p>'
        if rebaselined
        else ""
    )
    return Html(_table(headers, rows, (0, 6, 7)) + note)


def _conformance(run: _Run) -> Html:
    recs = run.steps("check_conformance")
    if not recs:
        return Html('<p class="muted">No conformance check ran.</p>')
    rows = []
    for r in recs:
        gates = ", ".join(f"{g.get('gate')}: {'pass' if g.get('success') else 'FAIL'}" for g in r.gates)
        err = _pre(r.details["error"]) if "error" in r.details else ""
        rows.append([r.seq, r.phase, r.details.get("label"), _badge(r.outcome), r.details.get("differences")])
        rows[-1] += [r.details.get("unaccepted"), gates, err]
    parts = [
        _table(["seq", "phase", "reference", "outcome", "differences", "unaccepted", "gates", "error"], rows, (0, 4, 5))
    ]
    files = {run.local(r.details.get(k)) for r in recs for k in ("csv", "json", "file")}
    files |= set((run.work_dir / "reports").glob("conformance*.csv")) | set(
        (run.work_dir / "reports").glob("conformance*.json")
    )
    for path in sorted(p.resolve() for p in files if p):
        diffs = _rows_of(path)
        parts.append(Html(f"<h4>{run.link(path, path.name)}: {len(diffs):,} difference(s)</h4>"))
        parts.append(_rows_table(diffs) if diffs else Html(""))
    return Html("".join(parts))


def _cutover(run: _Run) -> Html:
    decisions = [r for r in run.records if "decision" in r.details or "approval" in r.step or "decision" in r.step]
    steps = [r for r in run.records if r.phase in ("cutover", "rollback") and r not in decisions]
    if not decisions and not steps:
        return Html('<p class="muted">No cutover in this run.</p>')
    rows = []
    for r in decisions:
        d = r.details
        who = d.get("by") or d.get("approver") or r.actor
        rows.append([r.seq, _ts(r.ended_at or r.started_at), f"{r.phase}/{r.step}", who, d.get("decision")])
        rows[-1] += [_badge(r.outcome), d.get("reason") or d.get("error"), r.actor]
    parts = [_table(["seq", "when", "step", "who", "decision", "outcome", "reason", "recorded by"], rows, (0,))]
    if not decisions:
        parts = [Html('<p class="muted">No approval decision recorded.</p>')]
    if steps:
        rows = []
        for r in steps:
            err = _pre(r.details["error"]) if "error" in r.details else ""
            rows.append([r.seq, _ts(r.started_at), f"{r.phase}/{r.step}", r.details.get("node"), _badge(r.outcome)])
            rows[-1] += [_took(r), err]
        parts.append(Html("<h3>Cutover and rollback steps</h3>"))
        parts.append(_table(["seq", "started", "step", "node", "outcome", "took", "error"], rows, (0,)))
    return Html("".join(parts))


def _files(run: _Run) -> Html:
    items = [
        (run.work_dir / DATA_DOCS, "Great Expectations Data Docs"),
        (run.work_dir / "audit.jsonl", "audit trail (hash-chained JSONL)"),
        (run.work_dir / FINDINGS_CSV, "pre-migration findings"),
    ]
    items += [(p, "source snapshot") for p in sorted((run.work_dir / "snapshots").glob("*.json"))]
    log_phase = {run.local(r.details.get("log_file")): r.phase for r in run.records if "log_file" in r.details}
    items += [
        (p, f"log of {log_phase.get(p.resolve(), 'a JVM run')}") for p in sorted((run.work_dir / "logs").glob("*.log"))
    ]
    rows = [[run.link(p), what, p.stat().st_size] for p, what in items if p.is_file()]
    return Html(_table(["file", "what", "bytes"], rows, (2,)) if rows else '<p class="muted">No files.</p>')


def _records(run: _Run) -> Html:
    rows = []
    for r in run.records:
        target = r.details.get("target") or r.details.get("source") or ""
        err = _pre(r.details["error"]) if "error" in r.details else ""
        rows.append([r.seq, _ts(r.started_at), r.phase, r.step, target, _badge(r.outcome), _took(r), r.actor])
        rows[-1] += [(r.flow_run_id or "-")[:8], err]
    headers = ["seq", "started", "phase", "step", "database", "outcome", "took", "actor", "run", "error"]
    return Html(f"<details><summary>All {len(rows)} records</summary>{_table(headers, rows, (0, 6))}</details>")


# --- the page ---------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330}
body{margin:0 auto;max-width:1320px;padding:0 24px 48px}
h1{margin:20px 0 4px}h2{border-bottom:2px solid #d5dbe5;padding-bottom:4px;margin-top:36px}
nav a{margin-right:14px}table{border-collapse:collapse;margin:8px 0 16px;width:100%}
th,td{border:1px solid #d5dbe5;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f1f4f8}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}table.facts{width:auto}table.facts th{width:140px}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0}.banner.ok{background:#e6f4ea;border:1px solid #2e7d32}
.banner.bad{background:#fdecea;border:1px solid #c62828}.banner.warn{background:#fff8e1;border:1px solid #f9a825}
.badge{padding:1px 7px;border-radius:9px;font-size:12px;color:#fff;background:#607080;white-space:nowrap}
.badge.succeeded,.badge.accepted{background:#2e7d32}.badge.failed,.badge.blocking{background:#c62828}
.badge.skipped{background:#9e9e9e}.badge.rejected{background:#6a1b9a}.badge.started{background:#f9a825;color:#222}.badge.none{background:none;color:#888}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font-size:12px}pre.err{color:#8e1b1b}
code{font-size:12px;word-break:break-all}.muted{color:#6b7380}
svg.chart{display:block;max-width:100%;height:auto;border:1px solid #e2e6ec}
"""
_SECTIONS = [
    ("summary", "Summary"),
    ("timeline", "Timeline"),
    ("gates", "Quality gates"),
    ("row-counts", "Row counts"),
    ("findings", "Pre-migration findings"),
    ("scripts", "SQL scripts"),
    ("conformance", "Schema conformance"),
    ("cutover", "Cutover decisions"),
    ("files", "Files"),
    ("records", "Audit records"),
]


def build_report(work_dir: Path, out: Path | None = None) -> Path:
    """Write the run report of ``work_dir`` (default ``reports/report.html`` inside it); return its path."""
    work_dir = Path(work_dir).resolve()
    trail = work_dir / "audit.jsonl"
    if not trail.is_file():
        raise AuditError(f"{trail}: no audit trail here; give the work directory of a run (or its plan.toml)")
    out = Path(out) if out is not None else work_dir / "reports" / "report.html"
    records, problems = _read_trail(trail)
    run = _Run(work_dir, out.parent, records, problems)
    outcome = _outcome(records)
    bodies = {
        "summary": _summary(run, outcome),
        "timeline": _timeline(run),
        "gates": _gates(run),
        "row-counts": _row_counts(run),
        "findings": _findings(run),
        "scripts": _scripts(run),
        "conformance": _conformance(run),
        "cutover": _cutover(run),
        "files": _files(run),
        "records": _records(run) if records else Html(""),
    }
    plan = ", ".join(dict.fromkeys(r.plan for r in records)) or work_dir.name
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title in _SECTIONS)
    sections = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{bodies[sid]}</section>' for sid, title in _SECTIONS)
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Run report: {_e(plan)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head><body>'
        f"<h1>Run report: {_e(plan)}</h1><p class=muted>WSO2 API Manager 4.0.0 → 4.4.0 upgrade, rebuilt from "
        f"{_e(work_dir)}</p><nav>{nav}</nav>{sections}</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a report
    return out


def report_command(path: Path) -> Path:
    """Build the report for a work directory, its audit.jsonl, a plan.toml or a sandbox holding one."""
    path = Path(path)
    if path.is_dir() and not (path / "audit.jsonl").exists() and (path / "plan.toml").is_file():
        path = path / "plan.toml"
    if path.is_file() and path.suffix == ".toml":
        from apim_upgrade.plan import load_plan  # only this form needs the plan model

        return build_report(load_plan(path).work_dir)
    if path.is_file() and path.name == "audit.jsonl":
        return build_report(path.parent)
    if path.is_dir():
        return build_report(path)
    raise AuditError(f"{path}: give a work directory, its audit.jsonl or the plan.toml of the run to report on")
