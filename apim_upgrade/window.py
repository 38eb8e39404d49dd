"""The cutover window: its marker, its forecast from the latest rehearsal, its measurement.

In a cutover the data is frozen before it is copied: the window opens when the approval
is given and 4.0.0's control plane is stopped, and closes when 4.4.0 is healthy. What is
known about it lives in ``work/window.json`` (the copies do not exist when it opens):
who approved, when 4.0.0 stopped. A rerun after a crash finds it and continues inside the
window; ``apim-upgrade rollback`` removes it (a later cutover asks again).

The forecast reads the latest successful rehearsal's trail
(``work_dir/rehearsal_<date>/work/audit.jsonl``): each in-window phase's duration there,
the data-bound ones scaled by how much the sources grew since (``pg_database_size``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apim_upgrade import phases
from apim_upgrade.plan import Plan
from apim_upgrade.proof import audit
from apim_upgrade.runtime.atomic import write_atomically

ROLLBACK_HINT = (
    "the cutover window is open: `apim-upgrade rollback {plan} --yes` restores 4.0.0 on the untouched sources"
)
# Steps of the cutover phase that are part of the window (4.4.0 healthy ends it); gateways come after.
_CUTOVER_WINDOW_STEPS = ("check_source_drift", "stop_control_plane_400", "start_control_plane_440")
_NOT_SCALED = {phases.CUTOVER.name, phases.WINDOW.name, phases.CLEANUP.name}  # node starts do not grow with data


CUTOVER_PHASE = phases.CUTOVER.name


def marker_path(plan: Plan) -> Path:
    return plan.work_dir / "window.json"


@dataclass
class WindowState:
    approved_by: str
    opened_at: str  # ISO time the approval was given
    stopped_400_at: str | None = None  # when 4.0.0's control plane was down
    closed_at: str | None = None  # when 4.4.0 answered healthy

    def save(self, plan: Plan) -> None:
        write_atomically(marker_path(plan), json.dumps(asdict(self), indent=2))


def read_state(plan: Plan) -> WindowState | None:
    """The open (or closed) window of this plan, or None when no cutover was approved."""
    path = marker_path(plan)
    if not path.exists():
        return None
    return WindowState(**json.loads(path.read_text()))


def forget(plan: Plan) -> None:
    marker_path(plan).unlink(missing_ok=True)


def rollback_hint(plan: Plan) -> str:
    return ROLLBACK_HINT.format(plan=plan.source_path)


@dataclass
class Forecast:
    rehearsal: str | None  # the rehearsal directory the forecast comes from
    growth: float  # size of the sources now / at the rehearsal
    phases: list[dict[str, Any]] = field(default_factory=list)  # phase, rehearsed_s, forecast_s, scaled

    @property
    def total_seconds(self) -> float:
        return sum(float(p["forecast_s"]) for p in self.phases)

    def markdown(self) -> list[str]:
        if self.rehearsal is None:
            return ["No successful rehearsal of this estate yet: the window cannot be forecast."]
        lines = [
            f"Expected window: **{_human(self.total_seconds)}** (4.0.0 stopped → 4.4.0 healthy), from rehearsal "
            f"`{self.rehearsal}`, data-bound phases scaled ×{self.growth:.2f} for the sources' growth since:",
            "",
            "| phase | rehearsed | forecast |",
            "|---|---|---|",
        ]
        lines += [
            f"| {p['phase']}{'' if p['scaled'] else ' (not scaled)'} | {_human(p['rehearsed_s'])} | "
            f"{_human(p['forecast_s'])} |"
            for p in self.phases
        ]
        return lines


def _human(seconds: float) -> str:
    seconds = float(seconds)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _succeeded(records: list[audit.AuditRecord]) -> bool:
    return any(
        r.phase == phases.CUTOVER.name and r.step == "mark_phase_done" and r.outcome == "succeeded" for r in records
    )


def latest_rehearsal(plan: Plan) -> tuple[Path, list[audit.AuditRecord]] | None:
    """The latest rehearsal of this estate that cut over successfully, and its trail."""
    for trail in sorted(plan.work_dir.glob("rehearsal_*/work/audit.jsonl"), reverse=True):
        records = audit.read_records(trail)
        if _succeeded(records):
            return trail.parent.parent, records
    return None


def _span(records: list[audit.AuditRecord]) -> float:
    starts = [r.started_at for r in records]
    ends = [r.ended_at for r in records if r.ended_at is not None]
    return max((max(ends) - min(starts)).total_seconds(), 0.0) if starts and ends else 0.0


def rehearsed_sizes(records: list[audit.AuditRecord]) -> dict[str, int]:
    """pg_database_size of each source when the rehearsal copied it (its preflight recorded them)."""
    for r in reversed(records):
        if r.phase == phases.PREPARE_DATABASES.name and r.step == "preflight" and r.details.get("source_bytes"):
            return {str(k): int(v) for k, v in r.details["source_bytes"].items()}
    return {}


def forecast(plan: Plan, sizes_now: dict[str, int]) -> Forecast:
    """The window expected now: the latest successful rehearsal's in-window phases, scaled by growth."""
    found = latest_rehearsal(plan)
    if found is None:
        return Forecast(None, 1.0)
    where, records = found
    then = rehearsed_sizes(records)
    growth = (sum(sizes_now.values()) / sum(then.values())) if then and sum(then.values()) else 1.0
    result = Forecast(where.name, growth)
    for phase in window_phases():
        mine = [r for r in records if r.phase == phase and r.outcome in ("succeeded", "skipped")]
        if phase == phases.CUTOVER.name:
            mine = [r for r in mine if r.step in _CUTOVER_WINDOW_STEPS]
        rehearsed = _span(mine)
        scaled = phase not in _NOT_SCALED
        result.phases.append(
            {
                "phase": phase,
                "rehearsed_s": round(rehearsed, 2),
                "forecast_s": round(rehearsed * growth if scaled else rehearsed, 2),
                "scaled": scaled,
            }
        )
    return result


def window_phases() -> list[str]:
    """What the window consists of, in order (the cutover phase until 4.4.0 is healthy)."""
    return [p.name for p in phases.PHASES if p.in_window]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
