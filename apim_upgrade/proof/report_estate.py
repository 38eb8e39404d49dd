"""Where the estate stands now, as its audit trail tells it: which version serves, on which databases.

The report's outcome says how the last run ended ("Succeeded ... (last: rollback)"); an operator
reading it after a cutover, a rejection or a rollback needs the other half: what serves now.
Derived from the node steps the trail records (stop/start of each control plane, gateway
restarts and roll-backs, a rehearsal's clean-up), never from a guess about what is running.
"""

from __future__ import annotations

import re
from typing import Any

from apim_upgrade.proof.audit import AuditRecord
from apim_upgrade.proof.report_view import ts

# The dated suffix of a rehearsal plan's name (apim_upgrade.rehearsal derives it).
_REHEARSAL = re.compile(r"_rehearsal_\d{8}$")
_SWITCH_PHASES = ("window", "cutover", "rollback")


def _databases(records: list[AuditRecord], key: str) -> str:
    """The sources (``key="source"``) or copies (``"target"``) the trail names, API-M first."""
    by_role: dict[str, str] = {}
    for r in records:
        role, name = r.details.get("role"), r.details.get(key)
        if role in ("apim", "shared") and isinstance(name, str) and name:
            by_role[role] = name
    return ", ".join(by_role[k] for k in ("apim", "shared") if k in by_role)


def _nodes(rec: AuditRecord) -> list[dict[str, Any]]:
    return [n for n in rec.details.get("nodes") or [] if isinstance(n, dict)]


def estate_now(records: list[AuditRecord]) -> list[str]:
    """One line per part of the estate (control plane, gateways, copies), newest state first."""
    if not records:
        return []
    if _REHEARSAL.search(records[-1].plan):
        return _rehearsal(records)
    return _production(records)


def _rehearsal(records: list[AuditRecord]) -> list[str]:
    lines = ["production untouched: a rehearsal works on dated copies and nodes of its own"]
    ok = [r for r in records if r.outcome == "succeeded"]
    started = [r for r in ok if r.phase == "cutover" and r.step == "start_control_plane_440"]
    stops = [r for r in ok if r.step == "stop_rehearsal_node"]
    if started and (not stops or stops[-1].seq < started[-1].seq):
        node = started[-1].details.get("node")
        lines.append(f"rehearsal's 4.4.0 ({node}) still running on its copies since {ts(started[-1].ended_at)}")
    elif stops:
        lines.append(f"rehearsal's nodes stopped ({', '.join(str(r.details.get('node')) for r in stops)})")
    drops = [r for r in ok if r.step == "drop_rehearsal_copies"]
    copies = _databases(records, "target")
    if drops:
        dropped = ", ".join(drops[-1].details.get("dropped") or []) or "none left"
        lines.append(f"rehearsal copies dropped ({dropped}) at {ts(drops[-1].ended_at)}")
    elif copies:
        lines.append(f"rehearsal copies kept: {copies}")
    return lines


def _production(records: list[AuditRecord]) -> list[str]:
    sources, copies = _databases(records, "source") or "the sources", _databases(records, "target") or "the copies"
    cp400: tuple[str, AuditRecord] | None = None  # ("stopped" | "serving", the record that made it so)
    cp440: tuple[str, AuditRecord] | None = None
    gateways: AuditRecord | None = None
    rejected: AuditRecord | None = None
    for r in records:
        if r.step == "approval" and r.outcome == "rejected":
            rejected = r
        if r.outcome != "succeeded" or r.phase not in _SWITCH_PHASES:
            continue
        if r.step == "stop_control_plane_400":
            cp400 = ("stopped", r)
        elif r.step == "start_control_plane_400":  # a rollback
            cp400 = ("serving", r)
        elif r.step == "start_control_plane_440":
            cp440 = ("serving", r)
        elif r.step == "stop_control_plane_440":  # a rollback
            cp440 = ("stopped", r)
        elif r.step in ("restart_gateways", "roll_back_gateways"):
            gateways = r
    lines: list[str] = []
    if cp400 and cp400[0] == "serving":
        lines.append(f"4.0.0 serving on the sources ({sources}) since {ts(cp400[1].ended_at)}, after a rollback")
        how = cp440[1].details.get("state") if cp440 else None
        lines.append("4.4.0 stopped after rollback" + (f" ({how})" if how and how != "stopped" else ""))
    elif cp440 and cp440[0] == "serving":
        node, state = cp440[1].details.get("node"), cp440[1].details.get("state")
        lines.append(f"4.4.0 serving on {copies} since {ts(cp440[1].ended_at)} ({node}: {state})")
        if cp400:
            lines.append(f"4.0.0 stopped since {ts(cp400[1].ended_at)}; its sources ({sources}) kept for a rollback")
    elif cp400:
        lines.append(
            f"control plane DOWN: 4.0.0 stopped since {ts(cp400[1].ended_at)} and 4.4.0 not started "
            "(see the failure above for the way back)"
        )
    elif rejected is not None:
        by = rejected.details.get("by") or rejected.actor
        lines.append(f"4.0.0 serving on the sources ({sources}): the cutover was rejected by {by}, nothing stopped")
    else:
        lines.append(f"4.0.0 serving on the sources ({sources}): no step of these runs stopped it")
        if copies != "the copies":
            lines.append(f"copies in the making: {copies}")
    if gateways is not None:
        states = [f"{n.get('group')}/{n.get('node') or n.get('name')}: {n.get('state')}" for n in _nodes(gateways)]
        what = "rolled back" if gateways.step == "roll_back_gateways" else "restarted on 4.4.0"
        lines.append(f"gateways {what} at {ts(gateways.ended_at)}: " + ("; ".join(states) or "none"))
    return lines
