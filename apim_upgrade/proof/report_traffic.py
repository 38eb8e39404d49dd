"""The report's traffic section: the estate's calls per second from the traffic ledger, window shaded.

Reads the ledger the plan names (``[report] traffic_ledger``, format in ``ledger.py``), keeps
the calls made while this run worked (plus a margin), and draws them as stacked bars per
time bucket, answered calls and failed calls, with the cutover window measured in the
audit trail (``window_measured``: 4.0.0 stopped -> 4.4.0 healthy) shaded behind them. A
table beside it counts calls, failures and acknowledged writes per kind of call, and how
many failed inside the window. Hand-written SVG like ``report_charts``: no script, offline.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from markupsafe import Markup

from apim_upgrade.proof.audit import AuditRecord
from apim_upgrade.proof.ledger import LedgerEntry, LedgerError, read_ledger
from apim_upgrade.proof.report_charts import _legend, _line, _rect, _svg, _text, _tick_label, _ticks

_OK, _FAILED, _WINDOW = "#5c7cab", "#c62828", "#fff3c4"
_WIDTH, _HEIGHT = 1100, 300
_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)  # seconds
_MAX_BARS = 240


@dataclass(frozen=True)
class Traffic:
    """What the report shows of the ledger (``chart`` None: no call in the run's time)."""

    ledger: str
    chart: Markup | None
    headers: list[str]
    rows: list[list[object]]
    problem: str | None = None  # the ledger could not be read
    window: tuple[datetime, datetime] | None = None


def traffic(ledger: Path | None, records: list[AuditRecord]) -> Traffic | None:
    """The traffic section of a run's report, or None when the plan names no ledger."""
    if ledger is None:
        return None
    if not records:
        return Traffic(str(ledger), None, [], [], "no audit records: no time range to show")
    try:
        entries = read_ledger(ledger) if ledger.exists() else []  # missing: no client wrote to it (yet)
    except LedgerError as exc:
        return Traffic(str(ledger), None, [], [], str(exc))
    start = min(r.started_at for r in records)
    end = max(r.ended_at or r.started_at for r in records)
    margin = max((end - start) * 0.05, timedelta(seconds=5))
    start, end = start - margin, end + margin
    shown = [e for e in entries if start <= e.at <= end]
    window = _window(records)
    headers, rows = _counts(shown, window)
    if not shown:
        return Traffic(str(ledger), None, headers, rows, None, window)
    start, end = min(e.at for e in shown), max(e.ended for e in shown)
    label = f"Traffic ledger: {len(shown)} call(s), {sum(not e.ok for e in shown)} failed"
    return Traffic(str(ledger), Markup(traffic_svg(shown, start, end, window, label)), headers, rows, None, window)  # noqa: S704 - escaped in traffic_svg


def _window(records: list[AuditRecord]) -> tuple[datetime, datetime] | None:
    measured = [r for r in records if r.step == "window_measured" and r.outcome == "succeeded"]
    if not measured:
        return None
    d = measured[-1].details
    try:
        return datetime.fromisoformat(str(d["stopped_400_at"])), datetime.fromisoformat(str(d["healthy_440_at"]))
    except (KeyError, ValueError):
        return None


def _counts(
    entries: list[LedgerEntry], window: tuple[datetime, datetime] | None
) -> tuple[list[str], list[list[object]]]:
    calls, failed, writes, in_window = Counter[str](), Counter[str](), Counter[str](), Counter[str]()
    for e in entries:
        calls[e.call] += 1
        failed[e.call] += not e.ok
        writes[e.call] += e.acknowledged_write
        in_window[e.call] += bool(window and not e.ok and window[0] <= e.at <= window[1])
    headers = ["call", "calls", "failed", "acknowledged writes"]
    rows: list[list[object]] = [[c, calls[c], failed[c], writes[c]] for c in sorted(calls)]
    if window is not None:
        headers.append("failed inside the window")
        for row in rows:
            row.append(in_window[str(row[0])])
    return headers, rows


def traffic_svg(
    entries: list[LedgerEntry], start: datetime, end: datetime, window: tuple[datetime, datetime] | None, label: str
) -> str:
    """Stacked bars of answered and failed calls per second, per time bucket; the window shaded."""
    span = max((end - start).total_seconds(), 1.0)
    bucket = next((b for b in _BUCKETS if span / b <= _MAX_BARS), _BUCKETS[-1])
    count = int(span // bucket) + 1
    ok, bad = [0] * count, [0] * count
    for e in entries:
        i = min(int((e.at - start).total_seconds() // bucket), count - 1)
        (ok if e.ok else bad)[i] += 1
    peak = max(max(o + b for o, b in zip(ok, bad, strict=True)) / bucket, 1e-9)
    left, right, top, bottom = 70.0, _WIDTH - 30.0, 34.0, _HEIGHT - 50.0
    px = (right - left) / (count * bucket)
    py = (bottom - top) / (peak * 1.1)
    body: list[str] = []
    if window is not None:
        w0 = max((window[0] - start).total_seconds(), 0.0)
        w1 = min((window[1] - start).total_seconds(), count * bucket)
        if w1 > w0:
            took = (window[1] - window[0]).total_seconds()
            tip = f"cutover window: {window[0]:%H:%M:%S} to {window[1]:%H:%M:%S} ({took:.1f} s)"
            body.append(_rect(left + w0 * px, top, (w1 - w0) * px, bottom - top, _WINDOW, tip))
            body.append(_text(left + (w0 + w1) / 2 * px, top + 10, "window", size=10, anchor="middle"))
    for tick in _ticks(peak * 1.1, 5):
        y = bottom - tick * py
        body += [_line(left, y, right, y), _text(left - 6, y, _tick_label(tick), size=10, anchor="end")]
    for i, (o, b) in enumerate(zip(ok, bad, strict=True)):
        x, w = left + i * bucket * px, max(bucket * px - 1, 1.0)
        at = start + timedelta(seconds=i * bucket)
        if o:
            tip = f"{at:%H:%M:%S} +{bucket} s: {o} answered ({o / bucket:.2f}/s)"
            body.append(_rect(x, bottom - o / bucket * py, w, o / bucket * py, _OK, tip))
        if b:
            tip = f"{at:%H:%M:%S} +{bucket} s: {b} failed ({b / bucket:.2f}/s)"
            body.append(_rect(x, bottom - (o + b) / bucket * py, w, b / bucket * py, _FAILED, tip))
    for tick in _ticks(span, 8):
        x = left + tick * px
        body.append(_line(x, bottom, x, bottom + 4, "#888888"))
        body.append(_text(x, bottom + 12, _tick_label(tick), size=10, anchor="middle"))
    body.append(_line(left, bottom, right, bottom, "#888888"))
    axis = f"seconds since {start:%Y-%m-%d %H:%M:%S %Z}, {bucket} s per bar; height: calls per second".strip()
    body.append(_text((left + right) / 2, bottom + 32, axis, size=11, anchor="middle"))
    legend = [("answered", _OK), ("failed", _FAILED)] + ([("cutover window", _WINDOW)] if window else [])
    body += _legend(left, 14, legend)
    return _svg(_WIDTH, _HEIGHT, label, body)
