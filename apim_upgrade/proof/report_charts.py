"""The run report's two charts, written as inline SVG markup.

Hand-written SVG instead of a plotting library: the report is built after every run,
on the critical path, and importing and rasterising with matplotlib cost seconds; a
few hundred ``<rect>`` and ``<text>`` elements cost milliseconds, stay sharp at any
zoom, and each bar carries a ``<title>`` tooltip with its exact figures. Every text
is escaped; the markup references nothing outside itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

OUTCOME_COLOURS = {
    "succeeded": "#2e7d32",
    "skipped": "#9e9e9e",
    "failed": "#c62828",
    "rejected": "#6a1b9a",
    "started": "#f9a825",
}
_OTHER = "#455a64"  # an outcome this module does not know yet still gets a bar and a legend entry
_BAND = "#eef2f7"
_GRID = "#dddddd"
_SOURCE, _COPY_OK, _COPY_BAD = "#5c7cab", "#7fb77e", "#c62828"
_WIDTH = 1100
_FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


@dataclass(frozen=True)
class Bar:
    """One step's run on the timeline."""

    phase: str
    step: str
    start: datetime
    end: datetime
    outcome: str


@dataclass(frozen=True)
class TableCount:
    """Rows of one table in a source and in its copy (None: not known)."""

    label: str
    source: int
    copy: int | None


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _n(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_e(label)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" style="{_FONT}">'
        f"<title>{_e(label)}</title>" + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: object, *, size: int = 11, anchor: str = "start", bold: bool = False) -> str:
    weight = ' font-weight="bold"' if bold else ""
    return (
        f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size}" text-anchor="{anchor}" '
        f'dominant-baseline="middle"{weight}>{_e(text)}</text>'
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str | None = None) -> str:
    title = f"<title>{_e(tip)}</title>" if tip else ""
    return f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="{fill}">{title}</rect>'


def _line(x1: float, y1: float, x2: float, y2: float, colour: str = _GRID) -> str:
    return f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{colour}" stroke-width="0.6"/>'


def _legend(x: float, y: float, entries: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    for label, colour in entries:
        out += [_rect(x, y - 5, 10, 10, colour), _text(x + 14, y, label, size=10)]
        x += 24 + 6.5 * len(label)
    return out


def _ticks(top: float, count: int = 8) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) from 0 to ``top``."""
    raw = max(top, 1e-9) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(top / step) + 1)]


def _tick_label(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:g}"


def _time_unit(span_s: float) -> tuple[float, str]:
    # An hour-long cutover in seconds is unreadable, a 30 s rehearsal in hours too.
    if span_s < 180:
        return 1.0, "s"
    if span_s < 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def timeline_svg(bars: Sequence[Bar], label: str) -> str:
    """Horizontal bars, one row per phase/step, coloured by outcome; phases banded and named."""
    t0 = min(b.start for b in bars)
    span = max((max(b.end for b in bars) - t0).total_seconds(), 1.0)
    scale, unit = _time_unit(span)
    # Rows grouped by phase (in order of first appearance), steps in order within it,
    # so each phase is one contiguous band even when a step was rerun later.
    phases: dict[str, list[str]] = {}
    for b in bars:
        steps = phases.setdefault(b.phase, [])
        if b.step not in steps:
            steps.append(b.step)
    rows = {(p, s): i for i, (p, s) in enumerate((p, s) for p, steps in phases.items() for s in steps)}

    left, right, top, row_h = 220.0, _WIDTH - 190.0, 34.0, 18.0
    height = int(top + row_h * len(rows) + 44)
    x_max = span / scale * 1.01
    px = (right - left) / x_max
    body: list[str] = []
    first = 0
    for n, (phase, steps) in enumerate(phases.items()):
        y0 = top + first * row_h
        if n % 2 == 0:
            body.append(_rect(left, y0, right - left, row_h * len(steps), _BAND))
        body.append(_line(left, y0, right, y0, "#c0c8d4"))
        body.append(_text(right + 8, y0 + row_h * len(steps) / 2, phase, size=11, bold=True))
        first += len(steps)
    bottom = top + row_h * len(rows)
    for tick in _ticks(x_max):
        x = left + tick * px
        body += [_line(x, top, x, bottom), _text(x, bottom + 10, _tick_label(tick), size=10, anchor="middle")]
    for (_, step), i in rows.items():
        body.append(_text(left - 6, top + (i + 0.5) * row_h, step, size=10, anchor="end"))
    for b in bars:
        took = (b.end - b.start).total_seconds()
        x = left + (b.start - t0).total_seconds() / scale * px
        width = max(took / scale * px, 1.5)  # sub-second steps stay visible as slivers
        y = top + (rows[(b.phase, b.step)] + 0.15) * row_h
        tip = f"{b.phase}/{b.step}: {b.outcome}, {took:.1f} s from {b.start.strftime('%H:%M:%S')}"
        body.append(_rect(x, y, width, row_h * 0.7, OUTCOME_COLOURS.get(b.outcome, _OTHER), tip))
    body.append(_line(left, bottom, right, bottom, "#888888"))
    since = f"elapsed ({unit}) since {t0.strftime('%Y-%m-%d %H:%M:%S %Z')}".strip()
    body.append(_text((left + right) / 2, bottom + 28, since, size=11, anchor="middle"))
    seen = {b.outcome for b in bars}
    present = [o for o in OUTCOME_COLOURS if o in seen] + sorted(seen - OUTCOME_COLOURS.keys())
    body += _legend(left, 14, [(o, OUTCOME_COLOURS.get(o, _OTHER)) for o in present])
    return _svg(_WIDTH, height, label, body)


def _log_x(rows: float, top_power: int) -> float:
    """Where ``rows`` sits on a log scale from 0 to 10**top_power, as a fraction (0 rows: 0, 1 row: a sliver)."""
    return math.log10(rows + 1) / math.log10(10**top_power + 1) if rows > 0 else 0.0


def row_counts_svg(tables: Sequence[TableCount], label: str) -> str:
    """Source vs copy rows for the given (already selected, largest-first) tables, on a log scale.

    A linear axis let the one or two token tables flatten every other bar to a sliver; on a
    log scale a table of 40 rows and one of 4 million both read, and each bar is labelled
    with its exact count.
    """
    left, right, top, row_h = 300.0, _WIDTH - 120.0, 34.0, 26.0
    height = int(top + row_h * len(tables) + 40)
    biggest = max([t.source for t in tables] + [t.copy or 0 for t in tables] + [1])
    top_power = max(1, math.ceil(math.log10(biggest)))
    span = right - left
    bottom = top + row_h * len(tables)
    body: list[str] = []
    for power in range(top_power + 1):
        x = left + _log_x(10**power, top_power) * span if power else left
        value = 10**power if power else 0
        body += [_line(x, top, x, bottom), _text(x, bottom + 10, _tick_label(value), size=10, anchor="middle")]
    for i, t in enumerate(tables):
        y = top + i * row_h
        equal = t.copy == t.source
        copy_text = "?" if t.copy is None else f"{t.copy:,}"
        source_w, copy_w = _log_x(t.source, top_power) * span, _log_x(t.copy or 0, top_power) * span
        body.append(_text(left - 6, y + row_h / 2, t.label, size=10, anchor="end"))
        body.append(_rect(left, y + 3, source_w, 9, _SOURCE, f"{t.label}: source snapshot {t.source:,} rows"))
        colour = _COPY_OK if equal else _COPY_BAD
        body.append(_rect(left, y + 13, copy_w, 9, colour, f"{t.label}: copy {copy_text} rows"))
        text = f"{t.source:,}" if equal else f"{t.source:,} → {copy_text}"
        body.append(_text(left + max(source_w, copy_w) + 6, y + row_h / 2, text, size=10))
    body.append(_line(left, bottom, right, bottom, "#888888"))
    body.append(_text((left + right) / 2, bottom + 28, "rows (log scale)", size=11, anchor="middle"))
    legend = [("source snapshot", _SOURCE), ("copy (equal)", _COPY_OK), ("copy (differs / unknown)", _COPY_BAD)]
    body += _legend(left, 14, legend)
    return _svg(_WIDTH, height, label, body)
