"""The migration plan: one TOML file, validated once by one pydantic model.

Secrets never live in the file: the PostgreSQL password comes from an
environment variable or a Prefect Secret block named in the plan.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, overload

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)

from apim_upgrade.errors import PlanError
from apim_upgrade.plan.nodes import CutoverSection, RehearsalNodes, labelled_nodes, shared_nodes
from apim_upgrade.plan.sections import (
    CopySection,
    Databases,
    MigrationEnvironmentSection,
    PostgresSection,
    ReportSection,
    SchemaUpgradeSection,
    Section,
    Strategy,
    Target440Section,
)
from apim_upgrade.postgres.address import PgServer


class Plan(Section):
    """A whole migration plan, as read from ``PLAN.toml``."""

    name: str = Field(min_length=1, description="Estate name; labels audit records and locks.")
    strategy: Strategy = Field(
        Strategy.SIDE_BY_SIDE,
        description="'side-by-side': 4.0.0 stays untouched until the switch and can be rolled back; "
        "'in-place': downtime between stopping 4.0.0 and starting 4.4.0, restore from backups.",
    )
    work_dir: Path = Field(description="Where audit trail, snapshots, logs and reports go.")
    postgres: PostgresSection = Field(
        default_factory=PostgresSection,  # type: ignore[arg-type]
        description="Maintenance connection to the estate's server.",
    )
    databases: Databases = Field(description="The API-M and shared databases and their copies.")
    copy_options: CopySection = Field(
        default_factory=CopySection,  # type: ignore[arg-type]
        alias="copy",
        description="How prepare-databases copies them.",
    )
    migration_environment: MigrationEnvironmentSection | None = Field(
        None, description="The 4.2.0 home of the JVM phases (identity-migration ... cleanup)."
    )
    schema_upgrade: SchemaUpgradeSection | None = Field(
        None, description="Vendor SQL scripts 4.2.0 -> 4.4.0 and conformance (schema-upgrade)."
    )
    target_440: Target440Section | None = Field(None, description="The 4.4.0 home (configure-440).")
    cutover: CutoverSection | None = Field(None, description="The nodes to switch over (cutover, rollback).")
    report: ReportSection = Field(
        default_factory=ReportSection,  # type: ignore[arg-type]
        description="Extra inputs of the run report.",
    )

    # Set by load_plan, not by the file.
    source_path: Path | None = Field(None, exclude=True)
    digest: str = Field("", exclude=True, description="SHA-256 of the plan file bytes.")
    _server: PgServer | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _reject_internal_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and ({"source_path", "digest"} & data.keys()):
            raise ValueError("'source_path' and 'digest' are computed, not plan keys")
        return data

    @model_validator(mode="after")
    def _rehearsal_nodes_are_not_production(self) -> Plan:
        if self.cutover is None or self.cutover.rehearsal is None:
            return self
        rehearsal = labelled_nodes(self.cutover.rehearsal, "cutover.rehearsal")
        if self.target_440 is not None:
            # A rehearsal runs its own copy of the 4.4.0 home: commands naming the home name that copy.
            own = RehearsalNodes.model_validate(
                replace_in_strings(
                    self.cutover.rehearsal.model_dump(mode="json"), str(self.target_440.home), "<rehearsal copy>"
                )
            )
            rehearsal = labelled_nodes(own, "cutover.rehearsal")
        clashes = shared_nodes(labelled_nodes(self.cutover, "cutover"), rehearsal)
        if clashes:
            raise ValueError(
                "rehearsal nodes must be other nodes than production's (a rehearsal would stop or restart "
                "production): " + "; ".join(clashes) + ". Give [cutover.rehearsal] nodes their own homes, "
                "ports and commands, or remove [cutover.rehearsal] (rehearsals then skip the cutover)"
            )
        return self

    def server(self) -> PgServer:
        """The maintenance server; its password is resolved on first use, once per loaded plan."""
        if self._server is None:
            self._server = PgServer(
                host=self.postgres.host,
                port=self.postgres.port,
                user=self.postgres.user,
                password=_resolve_password(self.postgres),
                sslmode=self.postgres.sslmode,
                connect_timeout=self.postgres.connect_timeout,
            )
        return self._server

    @overload
    def section(self, name: Literal["migration_environment"]) -> MigrationEnvironmentSection: ...
    @overload
    def section(self, name: Literal["schema_upgrade"]) -> SchemaUpgradeSection: ...
    @overload
    def section(self, name: Literal["target_440"]) -> Target440Section: ...
    @overload
    def section(self, name: Literal["cutover"]) -> CutoverSection: ...
    def section(self, name: str) -> Any:
        """An optional section a step needs; its absence is one line naming the section and the file."""
        value = getattr(self, name)
        if value is None:
            raise PlanError(f"{self.source_path or 'the plan'} has no [{name}] section; add it to run this step")
        return value

    @property
    def audit_path(self) -> Path:
        return self.work_dir / "audit.jsonl"


# A Secret block is one Prefect API call: read once per process (a CLI run, or one flow run
# of a process worker) and shared by every phase of that run.
_SECRET_BLOCKS: dict[str, SecretStr] = {}


def _resolve_password(section: PostgresSection) -> SecretStr | None:
    if section.password_env:
        value = os.environ.get(section.password_env)
        if value is None:
            raise PlanError(
                f"environment variable {section.password_env} (postgres.password_env) is not set; "
                "export it with the PostgreSQL password before running"
            )
        return SecretStr(value)
    if section.password_secret_block:
        cached = _SECRET_BLOCKS.get(section.password_secret_block)
        if cached is not None:
            return cached
        from prefect.blocks.system import Secret  # imported late: needs a Prefect API

        try:
            block = Secret.load(section.password_secret_block)
        except ValueError as exc:
            raise PlanError(
                f"Prefect Secret block '{section.password_secret_block}' "
                f"(postgres.password_secret_block) cannot be loaded: {exc}. Create it with "
                "`prefect block create secret` or point the plan at another block"
            ) from None
        secret: Any = block
        resolved = SecretStr(str(secret.get()))
        _SECRET_BLOCKS[section.password_secret_block] = resolved
        return resolved
    return None


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; every problem becomes one line naming the key."""
    plan_path = Path(path).expanduser()
    try:
        raw_bytes = plan_path.read_bytes()
    except OSError as exc:
        raise PlanError(f"cannot read plan file {plan_path}: {exc.strerror}; check the path") from None
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(f"{plan_path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{plan_path}: not valid TOML: {exc}; fix the syntax") from None
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        raise PlanError(_format_validation(plan_path, exc)) from None
    base = plan_path.resolve().parent
    return plan.model_copy(
        update={
            "work_dir": _absolute(base, plan.work_dir),
            "source_path": plan_path.resolve(),
            "digest": hashlib.sha256(raw_bytes).hexdigest(),
            "migration_environment": _resolve_paths(base, plan.migration_environment),
            "schema_upgrade": _resolve_paths(base, plan.schema_upgrade),
            "target_440": _resolve_paths(base, plan.target_440),
            "cutover": _resolve_paths(base, plan.cutover),
            "report": _resolve_paths(base, plan.report),
        }
    )


def _absolute(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _resolve_paths(base: Path, section: Section | None) -> Any:
    """Make every Path field of a section absolute, relative to the plan file."""
    if section is None:
        return None
    updates: dict[str, Any] = {}
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, Path):
            updates[name] = _absolute(base, value)
        elif isinstance(value, list) and value and isinstance(value[0], Path):
            updates[name] = [_absolute(base, v) for v in value]
        elif isinstance(value, list) and value and isinstance(value[0], Section):
            updates[name] = [_resolve_paths(base, v) for v in value]
        elif isinstance(value, Section):
            updates[name] = _resolve_paths(base, value)
    return section.model_copy(update=updates)


# Keys whose values are never echoed in a message, even when they are the wrong type.
_SECRET_KEY = re.compile(r"password|secret|token|credential", re.I)


def _format_validation(path: Path, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key; remove it or fix its spelling"
        elif kind == "missing":
            msg = "required key is missing; add it"
        elif kind == "value_error":
            msg = err["msg"].removeprefix("Value error, ")
        else:  # a wrong type or value: say what was given (unless secret-looking) and what to do
            value = err.get("input")
            shown = (
                f" (got {value!r:.60})"
                if isinstance(value, str | int | float | bool) and not _SECRET_KEY.search(where)
                else ""
            )
            msg = f"{err['msg']}{shown}; fix the value"
        problems.append(f"{where}: {msg}")
    # One problem stays on one line (the CLI prints a single FAILED line); several are listed.
    if len(problems) == 1:
        return f"{path}: the plan is invalid: {problems[0]}"
    return "\n".join([f"{path}: the plan is invalid ({len(problems)} problems):"] + [f"  - {p}" for p in problems])


def replace_in_strings(value: Any, old: str, new: str) -> Any:
    """``value`` with ``old`` replaced by ``new`` in every string it holds (lists and tables walked)."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [replace_in_strings(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: replace_in_strings(v, old, new) for k, v in value.items()}
    return value
