"""Customisations of the estate: what the sources have that WSO2's 4.0.0 DDL does not.

Every extra table, column, index, constraint and sequence of a source database (compared
with ``[schema_upgrade] source_dbscripts``) is a customisation. Each is either carried
through (the default: every gate then requires it to survive every step, and the final
conformance check accepts it as the estate's own) or accepted in the plan
(``[schema_upgrade] accepted_customisations``: a step may drop it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apim_upgrade.plan import Plan
from apim_upgrade.postgres import db
from apim_upgrade.postgres.catalog import SchemaObject
from apim_upgrade.proof import conformance
from apim_upgrade.proof.survival import PLAN_KEY, accepted_customisations


@dataclass(frozen=True)
class Customisation:
    role: str
    database: str  # the source database that has it
    obj: SchemaObject
    detail: str | None  # its definition as the catalogue prints it
    accepted: bool  # the plan accepts losing it

    def line(self) -> str:
        """One line for ``plan check`` and the logs."""
        if self.accepted:
            fate = f"accepted in the plan ({PLAN_KEY}): a step may drop it"
        else:
            fate = (
                "carried through: every gate requires it to survive every step "
                f'(to let the upgrade drop it, add "{self.obj.key()}" to {PLAN_KEY})'
            )
        return f"{self.database}: {self.obj.label()} is not in WSO2's 4.0.0 DDL; {fate}"

    def record(self) -> dict[str, Any]:
        """As the audit record (and the report) lists it."""
        return {
            "role": self.role,
            "database": self.database,
            "object": self.obj.label(),
            "key": self.obj.key(),
            "kind": self.obj.kind,
            "detail": self.detail,
            "accepted": self.accepted,
        }


def from_conformance(result: conformance.Conformance, accepted: set[SchemaObject]) -> list[Customisation]:
    """The extra objects of a source's conformance check against the 4.0.0 DDL."""
    out = []
    for difference in result.differences:
        obj = difference.extra_object()
        if obj is not None:
            out.append(Customisation(result.role, result.database, obj, difference.actual, obj in accepted))
    return sorted(out, key=lambda c: (c.role, c.obj))


def find_customisations(plan: Plan, server: db.PgServer | None = None) -> list[Customisation]:
    """Every customisation of both sources (read in read-only snapshots); none without source_dbscripts."""
    section = plan.schema_upgrade
    if section is None or section.source_dbscripts is None:
        return []
    server = server or plan.server()
    accepted = accepted_customisations(plan)
    out: list[Customisation] = []
    for role, pair in plan.databases.roles().items():
        result = conformance.check(server, role, pair.source, section.source_dbscripts, set(), pair.db_schema)
        out += from_conformance(result, accepted)
    return out
