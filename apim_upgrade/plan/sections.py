"""The plan's sections about databases, copies, the 4.2.0 environment, scripts, 4.4.0 and the report."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

# PostgreSQL silently truncates longer identifiers: a truncated target name
# could collide with another database, so refuse it up front.
_MAX_IDENTIFIER_BYTES = 63
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# An object key (apim_upgrade.postgres.catalog.SchemaObject.key): kind:table.name.
_OBJECT_KEY = re.compile(r"^(?:table:[^.]+|sequence:.+|(?:column|index|constraint):[^.]+\..+)$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_nul(name: str) -> str:
    # PostgreSQL names cannot hold a NUL byte; the driver would fail with a bare DataError later.
    if "\x00" in name:
        raise ValueError(f"{name!r} contains a NUL byte, which PostgreSQL names cannot hold; remove it")
    return name


DatabaseName = Annotated[str, Field(min_length=1), AfterValidator(_no_nul)]
RoleName = Annotated[str, Field(min_length=1), AfterValidator(_no_nul)]


class Strategy(StrEnum):
    SIDE_BY_SIDE = "side-by-side"
    IN_PLACE = "in-place"


class PostgresSection(Section):
    """Maintenance connection to the PostgreSQL server that holds the estate."""

    host: str = Field("127.0.0.1", description="Server host name or address.")
    port: int = Field(5432, ge=1, le=65535, description="Server port.")
    user: RoleName = Field("postgres", description="Role that copies databases (CREATEDB or superuser).")
    maintenance_db: DatabaseName = Field("postgres", description="Database to connect to for CREATE DATABASE.")
    password_env: str | None = Field(None, description="Environment variable holding the password.")
    password_secret_block: str | None = Field(None, description="Prefect Secret block holding it.")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = Field(
        None, description="libpq sslmode of every connection (default: libpq's own, 'prefer')."
    )
    connect_timeout: int = Field(10, ge=1, le=600, description="Seconds to wait for a connection.")

    @model_validator(mode="after")
    def _one_password_source(self) -> PostgresSection:
        if self.password_env and self.password_secret_block:
            raise ValueError("set either password_env or password_secret_block, not both")
        if self.password_env and not _ENV_NAME.match(self.password_env):
            raise ValueError(f"password_env '{self.password_env}' is not an environment variable name")
        return self


class DatabasePair(Section):
    """One production database and the copy the migration works on."""

    source: DatabaseName = Field(description="Production database (never written to).")
    target: DatabaseName = Field(description="Copy to create and migrate.")
    owner: RoleName = Field(description="Role that owns the copy (e.g. wso2_apim).")
    db_schema: str = Field("public", alias="schema", description="Schema that holds WSO2's tables.")

    @model_validator(mode="after")
    def _names_fit(self) -> DatabasePair:
        for label, name in (("source", self.source), ("target", self.target)):
            if len(name.encode()) > _MAX_IDENTIFIER_BYTES:
                raise ValueError(f"{label} name '{name}' is longer than PostgreSQL's 63-byte limit; shorten it")
        if self.source == self.target:
            raise ValueError(f"target '{self.target}' is the source itself; name a new database")
        return self


class Databases(Section):
    """The estate's two databases, each with the copy the migration works on."""

    apim: DatabasePair = Field(description="WSO2AM_DB (the API-M database).")
    shared: DatabasePair = Field(description="WSO2_SHARED_DB (registry and user store).")

    @model_validator(mode="after")
    def _distinct(self) -> Databases:
        keys = {
            "apim.source": self.apim.source,
            "apim.target": self.apim.target,
            "shared.source": self.shared.source,
            "shared.target": self.shared.target,
        }
        seen: dict[str, str] = {}
        for key, name in keys.items():
            if name in seen:
                raise ValueError(
                    f"databases.{seen[name]} and databases.{key} are both '{name}'; the four database "
                    "names (apim/shared source/target) must all differ: rename one"
                )
            seen[name] = key
        return self

    def roles(self) -> dict[str, DatabasePair]:
        return {"apim": self.apim, "shared": self.shared}


class CopySection(Section):
    """How the copies are made: CREATE DATABASE ... TEMPLATE, or online from an exported snapshot."""

    method: Literal["auto", "template", "snapshot"] = Field(
        "auto",
        description="'template': CREATE DATABASE ... TEMPLATE (the source must have no other session); "
        "'snapshot': online copy of a live source, read in one exported snapshot (pg_dump --snapshot, "
        "pg_restore), its row counts taken in that same snapshot; 'auto': template when the source has "
        "no other session, snapshot otherwise (never terminates a session).",
    )
    jobs: int = Field(2, ge=1, le=64, description="Parallel jobs of pg_dump and pg_restore (snapshot method).")
    strategy: Literal["default", "wal_log", "file_copy"] = Field(
        "default",
        description="CREATE DATABASE STRATEGY (PostgreSQL 15+); 'default' leaves it to the server.",
    )
    terminate_connections: bool = Field(
        False,
        description="Terminate other sessions on a source before a template copy (opt-in; "
        "only with method = 'template': the snapshot copy needs no session terminated).",
    )


class KeystoreSection(Section):
    """One keystore as deployment.toml names it; its password comes from the environment."""

    file_name: str = Field(min_length=1, description="File under repository/resources/security/.")
    type: str = Field("JKS", description="Keystore type as deployment.toml names it (JKS, PKCS12).")
    alias: str | None = Field(None, description="Key alias in the store (truststores have none).")
    password_env: str = Field(description="Environment variable holding the store password.")
    key_password_env: str | None = Field(None, description="Key password variable (default: password_env).")

    @model_validator(mode="after")
    def _env_names(self) -> KeystoreSection:
        for name in (self.password_env, self.key_password_env):
            if name is not None and not _ENV_NAME.match(name):
                raise ValueError(f"'{name}' is not an environment variable name")
        if "/" in self.file_name:
            raise ValueError(f"file_name '{self.file_name}' must be a bare file name")
        return self


class MigrationEnvironmentSection(Section):
    """The disposable 4.2.0 home: pack, driver, keystores, migration kits, secrets by name."""

    distribution_zip: Path = Field(description="The patched WSO2 API-M 4.2.0 pack (zip).")
    jdbc_driver: Path = Field(description="PostgreSQL JDBC driver jar (postgresql-42.x.jar).")
    java_home: Path | None = Field(None, description="JDK for api-manager.sh (default: $JAVA_HOME).")
    keystores: list[Path] = Field(description="The estate's keystore files to copy into the home.")
    keystore_tls: KeystoreSection = Field(description="[keystore.tls] of the 4.2.0 home (a copied file).")
    keystore_primary: KeystoreSection = Field(description="[keystore.primary] of the 4.2.0 home (a copied file).")
    truststore: KeystoreSection | None = Field(
        None, description="[truststore] of the 4.2.0 home (unset: the pack default's [truststore] is kept)."
    )
    admin_username: str = Field("admin", description="[super_admin] username of the 4.2.0 home.")
    admin_password_env: str = Field("ADMIN_PASSWORD", description="Variable holding the admin password.")
    db_username: str = Field(description="Role the JVM connects to the copies as.")
    db_password_env: str = Field("POSTGRES_PASSWORD", description="Variable holding its password.")
    jdbc_host: str | None = Field(None, description="Database host as the JVM sees it (default: postgres.host).")
    jdbc_port: int | None = Field(None, ge=1, le=65535, description="Its port (default: postgres.port).")
    pool_max_active: int = Field(150, ge=1, description="JDBC pool maxActive of both datasources.")
    pool_max_wait: int = Field(30000, ge=0, description="JDBC pool maxWait (milliseconds).")
    pool_min_idle: int = Field(5, ge=0, description="JDBC pool minIdle.")
    gateway_environments: list[dict[str, Any]] = Field(
        default_factory=list, description="Each [[apim.gateway.environment]] of the estate."
    )
    identity_migration_resources: Path = Field(description="IS migration-resources folder.")
    identity_migration_jar: Path = Field(description="org.wso2.carbon.is.migration-*.jar")
    api_migration_resources: Path = Field(description="API-M migration-resources folder.")
    api_migration_jar: Path = Field(description="org.wso2.carbon.apimgt.migrate.client-*.jar")
    accepted_invalid_apis: list[str] = Field(
        default_factory=list, description="APIs ('name:version:provider') allowed to fail pre-validation."
    )
    jvm_timeout_seconds: float = Field(3600, gt=0, description="Per JVM run, until server-up.")
    cleanup: Literal["delete", "archive"] = Field(
        "delete", description="What the cleanup phase does with the 4.2.0 home: delete it, or archive it (.tar.gz)."
    )

    @model_validator(mode="after")
    def _check(self) -> MigrationEnvironmentSection:
        for name in (self.admin_password_env, self.db_password_env):
            if not _ENV_NAME.match(name):
                raise ValueError(f"'{name}' is not an environment variable name")
        for i, env in enumerate(self.gateway_environments):
            if not isinstance(env.get("name"), str) or not env.get("type"):
                raise ValueError(f"gateway_environments[{i}] needs a 'name' and a 'type'")
            for key, value in env.items():
                literal = isinstance(value, str) and not value.startswith(("$env{", "${"))
                if "password" in key.lower() and literal:
                    raise ValueError(
                        f"gateway_environments[{i}].{key} holds a literal secret; use a "
                        "$env{VAR} or ${admin.password} placeholder"
                    )
        for api in self.accepted_invalid_apis:
            if api.count(":") != 2:
                raise ValueError(f"accepted_invalid_apis entry '{api}' must be 'name:version:provider'")
        return self

    def secret_variables(self) -> list[str]:
        """Every environment variable whose value the JVM needs (never their values)."""
        names = [self.admin_password_env, self.db_password_env]
        for ks in (self.keystore_tls, self.keystore_primary, self.truststore):
            if ks is not None:
                names += [ks.password_env] + ([ks.key_password_env] if ks.key_password_env else [])
        return sorted(set(names))


class SqlScript(Section):
    """One vendor upgrade script (WSO2 support hands them out)."""

    from_version: str = Field(pattern=r"^\d+\.\d+\.\d+$", description="Schema version the script starts from.")
    to_version: str = Field(pattern=r"^\d+\.\d+\.\d+$", description="Schema version it leaves.")
    path: Path = Field(description="The PostgreSQL script file (from WSO2 support).")
    dbscripts: Path | None = Field(
        None, description="The to_version pack's dbscripts/ folder: its tables/columns must exist after."
    )
    expected_row_changes: list[str] = Field(
        default_factory=list, description="Tables whose row count this script is allowed to change."
    )


class SchemaUpgradeSection(Section):
    """Vendor SQL scripts 4.2.0 -> 4.3.0 -> 4.4.0 (applied by schema-upgrade), and conformance."""

    start_version: str = Field("4.2.0", description="Schema version the first script must start from.")
    scripts: list[SqlScript] = Field(min_length=1, description="The scripts, in the order they apply.")
    target_dbscripts: Path = Field(description="The 4.4.0 pack's dbscripts/ folder (conformance reference).")
    source_dbscripts: Path | None = Field(
        None, description="The 4.0.0 pack's dbscripts/ folder: tells whether the source was customised."
    )
    accepted_differences: list[str] = Field(
        default_factory=list, description="Conformance difference keys (kind:table.name) that are accepted."
    )
    fixed_by_first_start: dict[str, str] = Field(
        default_factory=dict,
        description="Conformance difference keys (kind:table.name) that 4.4.0 fixes itself when it first starts "
        "(the field guide: it applies the remaining schema changes), each with why: the check before the start "
        "does not fail on them; the check after the first start does if they remain.",
    )
    accepted_customisations: list[str] = Field(
        default_factory=list,
        description="Customisations of the sources (objects the 4.0.0 DDL does not have) a step may drop, as "
        "object keys kind:table.name (table:x_audit, column:am_api.x_custom, index:am_api.x_idx, "
        "constraint:am_api.x_check, sequence:x_seq). Every other customisation is carried through: the gates "
        "fail if a step removes it, and the final conformance check accepts it as the estate's own.",
    )

    @model_validator(mode="after")
    def _object_keys(self) -> SchemaUpgradeSection:
        bad = [k for k in self.accepted_customisations if not _OBJECT_KEY.match(k)]
        if bad:
            raise ValueError(
                f"accepted_customisations entries {', '.join(repr(k) for k in bad)} are not object keys: write "
                "kind:table.name with kind table, column, index, constraint or sequence (table:x_audit, "
                "column:am_api.x_custom, sequence:x_seq), as `apim-upgrade plan check` prints them"
            )
        return self


class Target440Section(Section):
    """The 4.4.0 home and what it inherits from the estate's 4.0.0 installation (configure-440)."""

    home: Path = Field(description="The unpacked 4.4.0 home to configure (the control plane's).")
    old_home: Path = Field(description="The estate's 4.0.0 home: its deployment.toml and customisations.")
    carry_over: list[str] = Field(
        default_factory=list,
        description="Files/folders (relative to the homes) to bring over: themes, jars, keystores.",
    )
    conflict_policy: Literal["fail", "keep-440", "take-400"] = Field(
        "fail",
        description="A carried file that differs from the 4.4.0 pack's own: stop, keep 4.4.0's, or take 4.0.0's.",
    )
    db_username: str = Field(description="Role 4.4.0 connects to the migrated copies as.")
    db_password_env: str = Field("POSTGRES_PASSWORD", description="Variable holding its password on the nodes.")
    jdbc_host: str | None = Field(None, description="Database host as the nodes see it (default: postgres.host).")
    jdbc_port: int | None = Field(None, ge=1, le=65535, description="Its port (default: postgres.port).")
    server_offset: int | None = Field(
        None, ge=0, description="[server] offset for the 4.4.0 home instead of the one carried from 4.0.0."
    )

    @model_validator(mode="after")
    def _relative(self) -> Target440Section:
        for item in self.carry_over:
            if Path(item).is_absolute() or ".." in Path(item).parts:
                raise ValueError(f"carry_over entry '{item}' must be a path inside the home (relative, no '..')")
        if not _ENV_NAME.match(self.db_password_env):
            raise ValueError(f"'{self.db_password_env}' is not an environment variable name")
        return self


class ReportSection(Section):
    """What the run report draws besides the audit trail."""

    traffic_ledger: Path | None = Field(
        None,
        description="A traffic ledger (JSON lines, apim_upgrade/proof/ledger.py) that clients of the estate append "
        "to: the report charts its calls per second and failures, the cutover window shaded. Relative to the plan.",
    )
