"""Nothing that existed before a step is gone after it, unless the vendor removes it by name.

Every gate that compares a "before" and an "after" snapshot (the copy, each JVM run, each
vendor script, a read-only step) asks the same question of every table, column, index,
constraint and sequence the "before" saw: is it still there? An object may only be gone if

- WSO2 itself removes it between the step's versions: the source version's reference DDL
  has it and the step's target-version DDL does not (``schema_diff.removed_by_name``), or
- the plan accepts losing it (``[schema_upgrade] accepted_customisations``, keys
  ``kind:table.name``).

The objects of a table that may go (its columns, indexes, constraints) may go with it.
Anything else that is gone fails the gate, named ``kind table.name``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from apim_upgrade.plan import Plan
from apim_upgrade.postgres.catalog import SchemaObject, Snapshot
from apim_upgrade.postgres.schema_diff import SchemaCatalog, removed_by_name

PLAN_KEY = "[schema_upgrade] accepted_customisations"


def accepted_customisations(plan: Plan) -> set[SchemaObject]:
    """The objects the plan accepts losing (validated as object keys when the plan was loaded)."""
    section = plan.schema_upgrade
    return {SchemaObject.parse_key(k) for k in section.accepted_customisations} if section is not None else set()


@dataclass(frozen=True)
class Survival:
    """Which objects of ``before`` must still exist after a step, and why the others may go."""

    before: frozenset[SchemaObject]
    removed_by_ddl: frozenset[SchemaObject] = field(default_factory=frozenset)
    accepted: frozenset[SchemaObject] = field(default_factory=frozenset)
    why_kept: str = "this step removes nothing"  # why nothing else may go, for the failure message

    def may_go(self, obj: SchemaObject) -> bool:
        allowed = self.removed_by_ddl | self.accepted
        if obj in allowed:
            return True
        return obj.kind != "sequence" and SchemaObject("table", obj.table, "") in allowed

    def required(self) -> list[SchemaObject]:
        return sorted(o for o in self.before if not self.may_go(o))

    def vanished(self, after: Snapshot) -> list[SchemaObject]:
        """Objects that had to survive and are gone."""
        now = after.objects()
        return [o for o in self.required() if o not in now]

    def gone_as_allowed(self, after: Snapshot) -> dict[str, list[str]]:
        """Objects that are gone and were allowed to go, by reason (for the audit record)."""
        now = after.objects()
        out: dict[str, list[str]] = {"removed_by_target_ddl": [], "accepted": []}
        for obj in sorted(self.before - now):
            if self.may_go(obj):
                reason = "accepted" if self._accepted(obj) else "removed_by_target_ddl"
                out[reason].append(obj.label())
        return out

    def failures(self, after: Snapshot, database: str) -> list[str]:
        """One line per vanished object, naming it and the plan line that would accept its loss."""
        lines = []
        for obj in self.vanished(after):
            lines.append(
                f"{database}: {obj.label()} existed before this step and is gone ({self.why_kept}); restore it, "
                f'or accept losing it with {PLAN_KEY} = ["{obj.key()}"]'
            )
        return lines

    def _accepted(self, obj: SchemaObject) -> bool:
        return obj in self.accepted or SchemaObject("table", obj.table, "") in self.accepted


def survival(
    before: Snapshot,
    *,
    source_ddl: SchemaCatalog | None = None,
    target_ddl: SchemaCatalog | None = None,
    accepted: Iterable[SchemaObject] = (),
) -> Survival:
    """The survival rule of one step: ``source_ddl`` / ``target_ddl`` are the reference catalogues
    of the versions the step goes from and to (both needed for anything to count as removed)."""
    removed: set[SchemaObject] = set()
    why = "this step removes nothing"
    if source_ddl is not None and target_ddl is not None:
        removed = removed_by_name(source_ddl, target_ddl)
        why = (
            f"not removed by name by WSO2: {source_ddl.database.removeprefix('ddl:')} does not have it "
            f"or {target_ddl.database.removeprefix('ddl:')} still does"
        )
    elif target_ddl is not None:
        why = (
            "the DDL of the version this step starts from is unknown ([schema_upgrade] source_dbscripts for "
            "the JVM migrations, the previous script's dbscripts for a vendor script), so nothing counts as "
            "removed by name"
        )
    return Survival(
        before=frozenset(before.objects()),
        removed_by_ddl=frozenset(removed),
        accepted=frozenset(accepted),
        why_kept=why,
    )
