"""The traffic ledger: its file format, the plan key naming it, and the report's chart of it (no estate needed)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from apim_upgrade.plan import load_plan
from apim_upgrade.proof import audit
from apim_upgrade.proof.ledger import LedgerEntry, LedgerError, Written, append, read_ledger
from apim_upgrade.proof.report import build_report, report_page
from apim_upgrade.proof.report_markdown import summary_markdown

T0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)


def _entry(second: float, ok: bool, call: str = "token", **extra: object) -> LedgerEntry:
    wrote = Written("apim", "idn_oauth2_access_token", {"access_token_hash": f"h{second}"}) if ok else None
    return LedgerEntry(
        at=T0 + timedelta(seconds=second),
        seconds=0.01,
        call=call,
        target="http://127.0.0.1:9763/oauth2/token",
        ok=ok,
        status=200 if ok else None,
        error=None if ok else "no answer: [Errno 111] Connection refused",
        wrote=wrote if call == "token" else None,
        **extra,  # type: ignore[arg-type]
    )


def test_entries_round_trip_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    entries = [_entry(0, True), _entry(1, False), _entry(2, True, "invoke")]
    for e in entries:
        append(path, e)
    with open(path, "a") as fh:
        fh.write('{"v":1,"at":"2026-01-01T02:00:03+00:00","sec')  # the writer was killed mid-line
    assert read_ledger(path) == entries
    assert [e.acknowledged_write for e in entries] == [True, False, False]
    assert '"access_token"' not in path.read_text()  # a token is found by its hash, never written


def test_a_bad_line_inside_the_ledger_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    append(path, _entry(0, True))
    with open(path, "a") as fh:
        fh.write("not json\n")
    append(path, _entry(1, True))
    with pytest.raises(LedgerError, match=rf"{re.escape(str(path))}:2: not a traffic ledger entry"):
        read_ledger(path)
    with pytest.raises(LedgerError, match=r"cannot read the traffic ledger .* fix \[report\] traffic_ledger"):
        read_ledger(tmp_path / "missing.jsonl")


def test_the_plan_names_the_ledger_relative_to_itself(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.toml"
    base = 'name = "p"\nwork_dir = "work"\n'
    for role in ("apim", "shared"):
        base += f'[databases.{role}]\nsource = "{role}_s"\ntarget = "{role}_t"\nowner = "o"\n'
    plan_path.write_text(base + '[report]\ntraffic_ledger = "traffic.jsonl"\n')
    assert load_plan(plan_path).report.traffic_ledger == tmp_path / "traffic.jsonl"
    plan_path.write_text(base)
    assert load_plan(plan_path).report.traffic_ledger is None


def _trail(work: Path) -> None:
    """A cutover's trail: a step, then the window measured from 10 s to 20 s."""

    def rec(step: str, start: int, end: int, **details: object) -> None:
        audit.append_record(
            work / "audit.jsonl",
            plan="p",
            plan_digest="d",
            phase="cutover",
            step=step,
            flow_run_id=None,
            inputs=None,
            started_at=T0 + timedelta(seconds=start),
            ended_at=T0 + timedelta(seconds=end),
            outcome="succeeded",
            details=details,
        )

    rec("check_source_drift", 0, 1)
    window = {"stopped_400_at": (T0 + timedelta(seconds=10)).isoformat()}
    window["healthy_440_at"] = (T0 + timedelta(seconds=20)).isoformat()
    rec("window_measured", 20, 21, window_s=10.0, **window)
    rec("restart_gateways", 21, 30)


def test_the_report_charts_the_ledger_with_the_window_shaded(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    _trail(work)
    ledger = tmp_path / "traffic.jsonl"
    for second in range(30):
        inside = 10 <= second <= 20
        append(ledger, _entry(second, not inside))
        append(ledger, _entry(second + 0.5, True, "invoke"))  # the gateways keep serving
    append(ledger, _entry(3600, True))  # long after the run: not shown
    append(ledger, _entry(5, False, "<script>alert(1)</script>"))  # text from the file is escaped

    html = build_report(work, traffic_ledger=ledger).read_text()
    section = html[html.index("<h3>Traffic</h3>") :]
    assert 'aria-label="Traffic ledger: 61 call(s), 12 failed"' in section
    assert "cutover window" in section and "<rect" in section
    assert "<script" not in html and "&lt;script&gt;" in section
    rows = re.findall(r"<tr><td>([^<]+)</td><td class=num>(\d+)</td><td class=num>(\d+)</td>", section)
    assert ("token", "30", "11") in rows and ("invoke", "30", "0") in rows, rows
    assert "failed inside the window" in section

    plain = build_report(work).read_text()  # no ledger named: no traffic section
    assert "<h3>Traffic</h3>" not in plain
    missing = build_report(work, traffic_ledger=tmp_path / "none.jsonl").read_text()
    assert "No call in the ledger while this run worked." in missing  # nothing wrote to it (yet)

    # The Prefect UI's summary artifact tells the same story without the HTML report.
    page, _ = report_page(work, traffic_ledger=ledger)
    markdown = summary_markdown(page)
    traffic_md = markdown[markdown.index("## Traffic") :]
    assert "| token | 30 | 11 | " in traffic_md and "| invoke | 30 | 0 | " in traffic_md, traffic_md
    assert "failed inside the window" in traffic_md
    assert "## Traffic" not in summary_markdown(report_page(work)[0])
