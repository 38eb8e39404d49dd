"""The run report's two charts, drawn with matplotlib and returned as PNG bytes.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas
directly, never through pyplot: no global figure state and no GUI backend,
so a report can be built inside a Prefect worker thread or on a headless host.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

OUTCOME_COLOURS = {
    "succeeded": "#2e7d32",
    "skipped": "#9e9e9e",
    "failed": "#c62828",
    "rejected": "#6a1b9a",
    "started": "#f9a825",
}
_OTHER = "#455a64"  # an outcome this module does not know yet still gets a bar and a legend entry
_BAND = "#eef2f7"
_SOURCE, _COPY_OK, _COPY_BAD = "#5c7cab", "#7fb77e", "#c62828"


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


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _time_unit(span_s: float) -> tuple[float, str]:
    # An hour-long cutover in seconds is unreadable, a 30 s rehearsal in hours too.
    if span_s < 180:
        return 1.0, "s"
    if span_s < 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def timeline_png(bars: Sequence[Bar]) -> bytes:
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

    fig = Figure(figsize=(11, max(2.8, 0.26 * len(rows) + 1.3)))
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.2, right=0.8, top=1 - 0.55 / fig.get_figheight(), bottom=0.55 / fig.get_figheight())
    min_width = span / scale * 0.004  # sub-second steps stay visible as slivers
    for b in bars:
        left = (b.start - t0).total_seconds() / scale
        width = max((b.end - b.start).total_seconds() / scale, min_width)
        colour = OUTCOME_COLOURS.get(b.outcome, _OTHER)
        ax.barh(rows[(b.phase, b.step)], width, left=left, height=0.7, color=colour, edgecolor=colour)

    first = 0
    for n, (phase, steps) in enumerate(phases.items()):
        last = first + len(steps) - 1
        if n % 2 == 0:
            ax.axhspan(first - 0.5, last + 0.5, color=_BAND, zorder=0)
        ax.axhline(first - 0.5, color="#c0c8d4", linewidth=0.6)
        ax.text(
            1.01,
            (first + last) / 2,
            phase,
            transform=ax.get_yaxis_transform(),
            va="center",
            ha="left",
            fontsize=9,
            fontweight="bold",
        )
        first = last + 1
    ax.set_yticks(list(rows.values()), [s for _, s in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first step at the top
    ax.set_xlim(0, span / scale * 1.01)
    ax.set_xlabel(f"elapsed ({unit}) since {t0.strftime('%Y-%m-%d %H:%M:%S %Z')}".strip(), fontsize=9)
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)
    seen = {b.outcome for b in bars}
    present = [o for o in OUTCOME_COLOURS if o in seen] + sorted(seen - OUTCOME_COLOURS.keys())
    ax.legend(
        handles=[Patch(color=OUTCOME_COLOURS.get(o, _OTHER), label=o) for o in present],
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncol=len(present) or 1,
        frameon=False,
        fontsize=8,
    )
    return _png(fig)


def row_counts_png(tables: Sequence[TableCount]) -> bytes:
    """Source vs copy rows for the given (already selected, largest-first) tables."""
    fig = Figure(figsize=(11, max(2.5, 0.34 * len(tables) + 1.0)))
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.3, right=0.93, top=1 - 0.45 / fig.get_figheight(), bottom=0.5 / fig.get_figheight())
    ys = range(len(tables))
    ax.barh([y - 0.18 for y in ys], [t.source for t in tables], height=0.36, color=_SOURCE, label="source snapshot")
    copies = [t.copy or 0 for t in tables]
    colours = [_COPY_OK if t.copy == t.source else _COPY_BAD for t in tables]
    ax.barh([y + 0.18 for y in ys], copies, height=0.36, color=colours, label="copy")
    top = max([t.source for t in tables] + copies + [1])
    for y, t in zip(ys, tables, strict=True):
        text = f"{t.source:,}" if t.copy == t.source else f"{t.source:,} → {'?' if t.copy is None else f'{t.copy:,}'}"
        ax.text(max(t.source, t.copy or 0) + top * 0.01, y, text, va="center", fontsize=8)
    ax.set_yticks(list(ys), [t.label for t in tables], fontsize=8)
    ax.set_ylim(len(tables) - 0.5, -0.5)
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("rows", fontsize=9)
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)
    ax.legend(
        handles=[
            Patch(color=_SOURCE, label="source snapshot"),
            Patch(color=_COPY_OK, label="copy (equal)"),
            Patch(color=_COPY_BAD, label="copy (differs / unknown)"),
        ],
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncol=3,
        frameon=False,
        fontsize=8,
    )
    return _png(fig)
