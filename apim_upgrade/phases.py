"""The phase registry: every phase of the upgrade, declared once.

Flows, tasks, preflight, the CLI and the end-to-end flow read what a phase is from
here: its order, the plan section it needs, whether it records its completion in the
API-M copy (and so is skipped on a rerun), whether it starts the 4.2.0 JVM, which of
its inputs preflight checks before anything is written, which CLI options it takes,
and the flow that runs it. ``tests/test_phase_registry.py`` checks the declarations
against the flows themselves.

The flow is named by import path, not imported: the core never imports ``flows/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from apim_upgrade.errors import PlanError

if TYPE_CHECKING:  # the CLI's --help reads this registry and must not import the driver
    from apim_upgrade.plan import Plan


class PhaseInput(StrEnum):
    """Inputs preflight can check before a phase writes anything."""

    MIGRATION_HOME = "migration-home"  # the 4.2.0 pack, JDBC driver, keystores, migration kits
    JVM_SECRETS = "jvm-secrets"  # the $env{} variables the 4.2.0 deployment.toml names
    VENDOR_SCRIPTS = "vendor-scripts"  # script order and the dbscripts folders


class PhaseOption(StrEnum):
    """Run options only some phases accept (their flow has a parameter of that name)."""

    TERMINATE_CONNECTIONS = "terminate_connections"
    REBASELINE = "rebaseline"


@dataclass(frozen=True)
class Phase:
    name: str
    summary: str
    flow: str  # "module:function" of its Prefect flow
    section: str | None = None  # the plan section it needs beyond [postgres] and [databases]
    records_completion: bool = False  # writes apim_upgrade.completed_steps(phase, 'done') when it ends
    starts_jvm: bool = False  # runs bin/api-manager.sh of the 4.2.0 home
    inputs: frozenset[PhaseInput] = frozenset()
    options: frozenset[PhaseOption] = frozenset()
    # Needs the sources frozen: in a cutover it runs inside the window (after the approval and
    # 4.0.0's stop); a rehearsal runs it in registry order on online copies.
    in_window: bool = False

    @property
    def order(self) -> int:
        return [p.name for p in PHASES].index(self.name) + 1

    @property
    def flow_module(self) -> str:
        return self.flow.partition(":")[0]

    @property
    def flow_function(self) -> str:
        return self.flow.partition(":")[2]


_JVM_INPUTS = frozenset({PhaseInput.JVM_SECRETS})

PHASES: tuple[Phase, ...] = (
    Phase(
        "prepare-databases",
        "copy both production databases, add the registry indexes, gate the copies",
        "flows.prepare_databases:prepare_databases",
        options=frozenset({PhaseOption.TERMINATE_CONNECTIONS}),
        in_window=True,
    ),
    Phase(
        "migration-environment",
        "unpack the patched 4.2.0 pack, render deployment.toml, add the driver and keystores",
        "flows.migration_environment:migration_environment",
        section="migration_environment",
        starts_jvm=False,
        inputs=frozenset({PhaseInput.MIGRATION_HOME, PhaseInput.JVM_SECRETS}),
    ),
    Phase(
        "identity-migration",
        "api-manager.sh -Dmigrate -Dcomponent=identity on the copies, gated",
        "flows.identity_migration:identity_migration",
        section="migration_environment",
        records_completion=True,
        starts_jvm=True,
        inputs=_JVM_INPUTS,
        in_window=True,
    ),
    Phase(
        "api-pre-migration",
        "the API pre-migration validation (-DrunPreMigration): APIs whose definitions would break",
        "flows.api_pre_migration:api_pre_migration",
        section="migration_environment",
        records_completion=True,
        starts_jvm=True,
        inputs=_JVM_INPUTS,
        in_window=True,
    ),
    Phase(
        "api-migration",
        "the API migration from 4.0.0 to 4.2.0 on the copies, gated",
        "flows.api_migration:api_migration",
        section="migration_environment",
        records_completion=True,
        starts_jvm=True,
        inputs=_JVM_INPUTS,
        in_window=True,
    ),
    Phase(
        "cleanup",
        "discard (or archive) the 4.2.0 migration environment",
        "flows.cleanup:cleanup",
        section="migration_environment",
        records_completion=True,
        in_window=True,
    ),
    Phase(
        "schema-upgrade",
        "vendor SQL 4.2.0 -> 4.3.0 -> 4.4.0 on the API-M copy, gated, then conformance",
        "flows.schema_upgrade:schema_upgrade",
        section="schema_upgrade",
        records_completion=True,
        inputs=frozenset({PhaseInput.VENDOR_SCRIPTS}),
        options=frozenset({PhaseOption.REBASELINE}),
        in_window=True,
    ),
    Phase(
        "configure-440",
        "carry customisations over and render the 4.4.0 deployment.toml",
        "flows.configure_440:configure_440",
        section="target_440",
    ),
    Phase(
        "window",
        "cutover only: the approval, then stop 4.0.0's control plane (gateways keep serving), fence the sources "
        "read-only and wait until its sessions left them",
        "flows.window:window",
        section="cutover",
    ),
    Phase(
        "cutover",
        "after approval: stop 4.0.0's control plane, start 4.4.0's, conformance again, restart every gateway",
        "flows.cutover:cutover",
        section="cutover",
        records_completion=True,
        in_window=True,
    ),
)
NAMES: tuple[str, ...] = tuple(p.name for p in PHASES)
_BY_NAME = {p.name: p for p in PHASES}


def get(name: str) -> Phase:
    """The phase called ``name``; an unknown name is refused with the list of choices."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise PlanError(f"unknown phase '{name}'; choose one of: {', '.join(NAMES)}") from None


def missing_section(plan: Plan, name: str) -> str | None:
    """The plan section phase ``name`` needs and the plan lacks, if any."""
    section = get(name).section
    return section if section is not None and getattr(plan, section) is None else None


def check_runnable(plan: Plan, name: str) -> None:
    """Refuse a phase whose plan section is missing, naming the section and the file."""
    section = missing_section(plan, name)
    if section is not None:
        raise PlanError(f"phase {name} needs a [{section}] section in {plan.source_path}; add it")


def select(from_phase: str | None, until_phase: str | None) -> list[str]:
    """The phases from ``from_phase`` to ``until_phase`` (inclusive), in upgrade order."""
    for label, value in (("--from", from_phase), ("--until", until_phase)):
        if value is not None and value not in _BY_NAME:
            raise PlanError(f"{label} '{value}' is not a phase; choose one of: {', '.join(NAMES)}")
    first = NAMES.index(from_phase) if from_phase else 0
    last = NAMES.index(until_phase) if until_phase else len(NAMES) - 1
    if first > last:
        raise PlanError(f"--from {from_phase} comes after --until {until_phase}; swap them")
    return list(NAMES[first : last + 1])


def cutover_order(names: list[str]) -> list[str]:
    """The order of a cutover: what needs no frozen data first, then the window, then what does.

    The window phase is where the approval is given and 4.0.0 stops; everything declared
    ``in_window`` (the copies, the JVM phases, the schema upgrade, the switch) follows it.
    """
    before = [n for n in names if not get(n).in_window and n != WINDOW.name]
    inside = [n for n in names if get(n).in_window]
    return before + ([WINDOW.name] if inside or WINDOW.name in names else []) + inside


def inputs_of(names: list[str] | tuple[str, ...]) -> set[PhaseInput]:
    """Every input the given phases need checked."""
    return {i for n in names for i in get(n).inputs}


# Each phase by name, for flows and tasks that label their work with it.
(
    PREPARE_DATABASES,
    MIGRATION_ENVIRONMENT,
    IDENTITY_MIGRATION,
    API_PRE_MIGRATION,
    API_MIGRATION,
    CLEANUP,
    SCHEMA_UPGRADE,
    CONFIGURE_440,
    WINDOW,
    CUTOVER,
) = PHASES
