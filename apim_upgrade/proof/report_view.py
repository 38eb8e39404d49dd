"""The run report's view model and its page: typed values in, autoescaped HTML out.

``report.py`` gathers these from a work directory; ``templates/report.html.j2`` lays
them out and escapes every value (trail, plan or database text is never markup). Only
the charts arrive as ``Markup``: report_charts escapes every text it writes into them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from apim_upgrade.proof.audit import AuditRecord
from apim_upgrade.proof.report_traffic import Traffic

# --- what a table cell may hold besides text, numbers and None -------------------------


@dataclass(frozen=True)
class Badge:
    outcome: str
    label: str | None = None  # default: the outcome


@dataclass(frozen=True)
class Pre:
    text: object
    cls: str = "err"


@dataclass(frozen=True)
class Code:
    text: object


@dataclass(frozen=True)
class Link:
    href: str  # relative and already URL-quoted
    text: object


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[object]]
    numeric: Collection[int] = ()  # right-aligned columns


def chart(svg: str) -> Markup:
    # Hand-written SVG kept over a charting library: no JS or CDN, renders offline, a few kB.
    return Markup(svg)  # noqa: S704 - report_charts escapes every text it writes into the markup


# --- sections (None: the section says there is nothing to show) -------------------------


@dataclass(frozen=True)
class Outcome:
    failed: list[AuditRecord]  # failures (and rejections) no later run of the same step repaired
    recovered: list[AuditRecord]
    interrupted: list[AuditRecord]  # intents ("started") never followed by their outcome


@dataclass(frozen=True)
class Summary:
    problems: list[str]  # of the hash chain
    records: int
    outcome: Outcome
    stop_text: str  # of the last failure no later run repaired
    last_phase: str
    facts: list[tuple[str, object]]
    flow_runs: Table
    estate_now: tuple[str, ...] = ()  # where the estate stands after these runs (report_estate)


@dataclass(frozen=True)
class Gates:
    table: Table
    failed: int  # gate runs with failed expectations


@dataclass(frozen=True)
class SourceVsCopy:
    totals: Table
    problems: list[Pre]  # snapshots that could not be read
    chart: Markup | None
    differing: Table | None
    all_tables: Table | None


@dataclass(frozen=True)
class Findings:
    history: Table
    findings: Table | None
    csv: Link | None


@dataclass(frozen=True)
class Scripts:
    table: Table
    rebaselined: list[str]  # script files accepted as changed


@dataclass(frozen=True)
class DiffFile:
    link: Link
    total: int  # rows in the file; the table shows the first of them
    table: Table


@dataclass(frozen=True)
class Conformance:
    table: Table
    files: list[DiffFile]


@dataclass(frozen=True)
class Customisations:
    """Objects the sources have and WSO2's 4.0.0 DDL does not, as the source-400 check recorded them."""

    table: Table
    total: int
    accepted: int  # the plan lets a step drop these; the others are carried through


@dataclass(frozen=True)
class Cutover:
    decisions: Table | None
    steps: Table | None
    window: Table | None = None  # forecast, measured (4.0.0 stopped -> 4.4.0 healthy), each gateway out of service


@dataclass(frozen=True)
class Page:
    plan: str
    work_dir: Path
    summary: Summary
    phases: Table | None  # in the Prefect summary (report_markdown); the page draws the timeline
    customisations: Customisations | None
    timeline: Markup | None
    gates: Gates | None
    checkpoints: Table | None
    source_vs_copy: SourceVsCopy | None
    findings: Findings | None
    scripts: Scripts | None
    conformance: Conformance | None
    cutover: Cutover | None
    files: Table | None
    records: Table | None
    traffic: Traffic | None = None  # the traffic ledger the plan names (report_traffic)


# --- the page ------------------------------------------------------------------------------


def ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if value else ""


_ENV = Environment(
    loader=PackageLoader("apim_upgrade.proof", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["ts"] = ts
_ENV.tests.update(
    badge=lambda v: isinstance(v, Badge),
    pre=lambda v: isinstance(v, Pre),
    code=lambda v: isinstance(v, Code),
    link=lambda v: isinstance(v, Link),
    list=lambda v: isinstance(v, list),
)


def render(page: Page) -> str:
    """The whole page: one HTML document, no external assets."""
    return _ENV.get_template("report.html.j2").render(page=page) + "\n"
