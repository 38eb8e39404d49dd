"""The phases that exist, in the order an upgrade runs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apim_upgrade.errors import PlanError
from apim_upgrade.plan import Plan
from flows.api_migration import api_migration
from flows.api_pre_migration import api_pre_migration
from flows.cleanup import cleanup
from flows.configure_440 import configure_440
from flows.cutover import cutover
from flows.identity_migration import identity_migration
from flows.migration_environment import migration_environment
from flows.prepare_databases import prepare_databases
from flows.schema_upgrade import schema_upgrade

PHASES: dict[str, Callable[..., Any]] = {
    "prepare-databases": prepare_databases,
    "migration-environment": migration_environment,
    "identity-migration": identity_migration,
    "api-pre-migration": api_pre_migration,
    "api-migration": api_migration,
    "cleanup": cleanup,
    "schema-upgrade": schema_upgrade,
    "configure-440": configure_440,
    "cutover": cutover,
}
# The plan section each phase needs (beyond [postgres] and [databases]).
REQUIRED_SECTION = {
    "migration-environment": "migration_environment",
    "identity-migration": "migration_environment",
    "api-pre-migration": "migration_environment",
    "api-migration": "migration_environment",
    "cleanup": "migration_environment",
    "schema-upgrade": "schema_upgrade",
    "configure-440": "target_440",
    "cutover": "cutover",
}


def check_phase(plan: Plan, name: str) -> None:
    if name not in PHASES:
        raise PlanError(f"unknown phase '{name}'; choose one of: {', '.join(PHASES)}")
    section = REQUIRED_SECTION.get(name)
    if section and getattr(plan, section) is None:
        raise PlanError(f"phase {name} needs a [{section}] section in {plan.source_path}; add it")


def run_phase(name: str, plan: Plan, *, terminate_connections: bool = False, rebaseline: bool = False) -> Any:
    """Run one phase flow (locally: Prefect's embedded API unless PREFECT_API_URL is set)."""
    check_phase(plan, name)
    if name == "prepare-databases":
        return prepare_databases(plan_path=str(plan.source_path), terminate_connections=terminate_connections)
    if name == "schema-upgrade":
        return schema_upgrade(plan_path=str(plan.source_path), rebaseline=rebaseline)
    return PHASES[name](plan_path=str(plan.source_path))


def select_phases(from_phase: str | None, until_phase: str | None) -> list[str]:
    """The phases from ``from_phase`` to ``until_phase`` (inclusive), in upgrade order."""
    names = list(PHASES)
    for label, value in (("--from", from_phase), ("--until", until_phase)):
        if value is not None and value not in names:
            raise PlanError(f"{label} '{value}' is not a phase; choose one of: {', '.join(names)}")
    first = names.index(from_phase) if from_phase else 0
    last = names.index(until_phase) if until_phase else len(names) - 1
    if first > last:
        raise PlanError(f"--from {from_phase} comes after --until {until_phase}; swap them")
    return names[first : last + 1]
