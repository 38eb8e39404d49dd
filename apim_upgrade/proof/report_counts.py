"""The report's row totals: every count the trail records, from the source snapshot to 4.4.0 running.

Each gate records the totals of its "after" snapshot (and the cutover's conformance check a
full count once 4.4.0 runs on the copies), so the table goes on past the last script to the end.
"""

from __future__ import annotations

from apim_upgrade.proof.audit import AuditRecord
from apim_upgrade.proof.report_view import Table

_COUNTED = (  # the steps whose records hold row totals, in the order a run reaches them
    *("snapshot_source", "snapshot_targets", "snapshot_target", "validate_migration", "validate_unchanged"),
    *("validate_script", "check_conformance"),
)
_ROLES = ("apim", "shared")


def _counts(rec: AuditRecord, role_of: dict[str, str]) -> list[tuple[str, str, object, object, object]]:
    """(checkpoint, role, database, tables, total rows) of each count a record holds."""
    d = rec.details
    if rec.step == "snapshot_source":
        return [("source snapshot", str(d.get("role")), d.get("source"), d.get("tables"), d.get("total_rows"))]
    if rec.step in ("snapshot_target", "validate_script"):
        if "total_rows" not in d:  # a validate_script record of an earlier release
            return []
        target = str(d.get("target"))
        checkpoint = str(d.get("checkpoint") or "after the script")
        return [(checkpoint, role_of.get(target, target), target, d.get("tables"), d["total_rows"])]
    if rec.step == "snapshot_targets":
        return [(f"before {rec.phase}", role, None, None, d[f"{role}_rows"]) for role in _ROLES if f"{role}_rows" in d]
    # After a gated JVM step, and once 4.4.0 runs (the cutover's conformance check after its first start).
    label, counts = (
        ("after 4.4.0's first start", d.get("rows")) if rec.step == "check_conformance" else (f"after {rec.phase}", d)
    )
    out: list[tuple[str, str, object, object, object]] = []
    for role in _ROLES:
        c = counts.get(role) if isinstance(counts, dict) else None
        if isinstance(c, dict) and "total_rows" in c:
            out.append((label, role, c.get("target"), c.get("tables"), c["total_rows"]))
    return out


def row_totals(records: list[AuditRecord]) -> Table | None:
    """Row totals at every checkpoint the trail records, from the source snapshot to 4.4.0 running."""
    role_of = {
        str(r.details["target"]): str(r.details.get("role"))
        for r in records
        if r.step == "copy_database" and "target" in r.details
    }
    target_of = {role: target for target, role in role_of.items()}
    rows: list[list[object]] = []
    last: dict[str, int] = {}
    for rec in (r for r in records if r.step in _COUNTED):
        for label, role, database, tables, total in _counts(rec, role_of):
            database = database or target_of.get(role)
            delta = total - last[role] if isinstance(total, int) and role in last else None
            if isinstance(total, int):
                last[role] = total
            change = f"{delta:+,}" if delta else delta
            rows.append([rec.seq, rec.phase, label, role, database, tables, total, change])
    headers = ["seq", "phase", "checkpoint", "role", "database", "tables", "total rows", "change"]
    return Table(headers, rows, (0, 5, 6, 7)) if rows else None
