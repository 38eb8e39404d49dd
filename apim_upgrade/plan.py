"""The migration plan: one TOML file, validated once by one pydantic model.

Secrets never live in the file: the PostgreSQL password comes from an
environment variable or a Prefect Secret block named in the plan.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from apim_upgrade.db import PgServer
from apim_upgrade.errors import PlanError

# PostgreSQL silently truncates longer identifiers: a truncated target name
# could collide with another database, so refuse it up front.
_MAX_IDENTIFIER_BYTES = 63
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DatabaseName = Annotated[str, Field(min_length=1)]


class Strategy(StrEnum):
    SIDE_BY_SIDE = "side-by-side"
    IN_PLACE = "in-place"


class PostgresSection(_Section):
    """Maintenance connection to the PostgreSQL server that holds the estate."""

    host: str = Field("127.0.0.1", description="Server host name or address.")
    port: int = Field(5432, ge=1, le=65535, description="Server port.")
    user: str = Field("postgres", description="Role that copies databases (CREATEDB or superuser).")
    maintenance_db: str = Field("postgres", description="Database to connect to for CREATE DATABASE.")
    password_env: str | None = Field(None, description="Environment variable holding the password.")
    password_secret_block: str | None = Field(None, description="Prefect Secret block holding it.")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    connect_timeout: int = Field(10, ge=1, le=600)

    @model_validator(mode="after")
    def _one_password_source(self) -> PostgresSection:
        if self.password_env and self.password_secret_block:
            raise ValueError("set either password_env or password_secret_block, not both")
        if self.password_env and not _ENV_NAME.match(self.password_env):
            raise ValueError(f"password_env '{self.password_env}' is not an environment variable name")
        return self


class DatabasePair(_Section):
    """One production database and the copy the migration works on."""

    source: DatabaseName = Field(description="Production database (never written to).")
    target: DatabaseName = Field(description="Copy to create and migrate.")
    owner: str = Field(description="Role that owns the copy (e.g. wso2_apim).")
    db_schema: str = Field("public", alias="schema", description="Schema that holds WSO2's tables.")

    @model_validator(mode="after")
    def _names_fit(self) -> DatabasePair:
        for label, name in (("source", self.source), ("target", self.target)):
            if len(name.encode()) > _MAX_IDENTIFIER_BYTES:
                raise ValueError(
                    f"{label} name '{name}' is longer than PostgreSQL's 63-byte limit; shorten it"
                )
        if self.source == self.target:
            raise ValueError(f"target '{self.target}' is the source itself; name a new database")
        return self


class Databases(_Section):
    apim: DatabasePair = Field(description="WSO2AM_DB (the API-M database).")
    shared: DatabasePair = Field(description="WSO2_SHARED_DB (registry and user store).")

    @model_validator(mode="after")
    def _distinct(self) -> Databases:
        names = [self.apim.source, self.apim.target, self.shared.source, self.shared.target]
        if len(set(names)) != 4:
            raise ValueError(
                "the four database names (apim/shared source/target) must all differ: " + ", ".join(names)
            )
        return self

    def roles(self) -> dict[str, DatabasePair]:
        return {"apim": self.apim, "shared": self.shared}


class CopySection(_Section):
    """How the copies are made (CREATE DATABASE ... TEMPLATE)."""

    strategy: Literal["default", "wal_log", "file_copy"] = Field(
        "default",
        description="CREATE DATABASE STRATEGY (PostgreSQL 15+); 'default' leaves it to the server.",
    )
    terminate_connections: bool = Field(
        False, description="Terminate other sessions on a source before copying it (opt-in)."
    )


class MigrationEnvironmentSection(_Section):
    """The disposable 4.2.0 home (filled by the migration-environment phase)."""

    distribution_zip: Path | None = None
    jdbc_driver: Path | None = None
    java_home: Path | None = None
    keystores: list[Path] = Field(default_factory=list)
    identity_migration_resources: Path | None = None
    identity_migration_jar: Path | None = None
    api_migration_resources: Path | None = None
    api_migration_jar: Path | None = None
    accepted_invalid_apis: list[str] = Field(default_factory=list)
    cleanup: Literal["delete", "archive"] = "delete"


class SqlScript(_Section):
    from_version: str
    to_version: str
    path: Path


class SchemaUpgradeSection(_Section):
    """Vendor SQL scripts 4.2.0 -> 4.3.0 -> 4.4.0 (applied by schema-upgrade)."""

    scripts: list[SqlScript] = Field(default_factory=list)
    dbscripts_440: Path | None = None
    accepted_differences: list[str] = Field(default_factory=list)


class Target440Section(_Section):
    """The 4.4.0 home (configured by configure-440)."""

    home: Path | None = None
    old_home: Path | None = None
    carry_over: list[str] = Field(default_factory=list)


class NodeCommands(_Section):
    name: str
    start: list[str] = Field(default_factory=list)
    stop: list[str] = Field(default_factory=list)
    health_url: str | None = None


class GatewayGroup(_Section):
    name: str
    nodes: list[NodeCommands] = Field(default_factory=list)


class CutoverSection(_Section):
    """Control-plane and gateway commands (used by cutover)."""

    control_plane_440: list[NodeCommands] = Field(default_factory=list)
    control_plane_400: list[NodeCommands] = Field(default_factory=list)
    gateway_groups: list[GatewayGroup] = Field(default_factory=list)
    unattended: bool = False


class Plan(_Section):
    """A whole migration plan, as read from ``PLAN.toml``."""

    name: str = Field(min_length=1, description="Estate name; labels audit records and locks.")
    strategy: Strategy = Strategy.SIDE_BY_SIDE
    work_dir: Path = Field(description="Where audit trail, snapshots, logs and reports go.")
    postgres: PostgresSection = Field(default_factory=PostgresSection)  # type: ignore[arg-type]
    databases: Databases
    copy_options: CopySection = Field(default_factory=CopySection, alias="copy")  # type: ignore[arg-type]
    migration_environment: MigrationEnvironmentSection | None = None
    schema_upgrade: SchemaUpgradeSection | None = None
    target_440: Target440Section | None = None
    cutover: CutoverSection | None = None

    # Set by load_plan, not by the file.
    source_path: Path | None = Field(None, exclude=True)
    digest: str = Field("", exclude=True, description="SHA-256 of the plan file bytes.")

    @model_validator(mode="before")
    @classmethod
    def _reject_internal_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and ({"source_path", "digest"} & data.keys()):
            raise ValueError("'source_path' and 'digest' are computed, not plan keys")
        return data

    def server(self) -> PgServer:
        """The maintenance server, with its password resolved at call time."""
        return PgServer(
            host=self.postgres.host,
            port=self.postgres.port,
            user=self.postgres.user,
            password=_resolve_password(self.postgres),
            sslmode=self.postgres.sslmode,
            connect_timeout=self.postgres.connect_timeout,
        )

    @property
    def audit_path(self) -> Path:
        return self.work_dir / "audit.jsonl"


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
        return SecretStr(str(secret.get()))
    return None


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; every problem becomes one line naming the key."""
    plan_path = Path(path).expanduser()
    try:
        raw_bytes = plan_path.read_bytes()
    except OSError as exc:
        raise PlanError(f"cannot read plan file {plan_path}: {exc.strerror}; check the path") from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
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
        }
    )


def _absolute(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _resolve_paths(base: Path, section: _Section | None) -> Any:
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
        elif isinstance(value, list) and value and isinstance(value[0], _Section):
            updates[name] = [_resolve_paths(base, v) for v in value]
    return section.model_copy(update=updates)


def _format_validation(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: the plan is invalid ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key; remove it or fix its spelling"
        elif kind == "missing":
            msg = "required key is missing; add it"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  - {where}: {msg}")
    return "\n".join(lines)
