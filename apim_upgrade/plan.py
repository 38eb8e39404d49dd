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
from typing import Annotated, Any, Literal, overload
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)

from apim_upgrade.errors import PlanError
from apim_upgrade.postgres.address import PgServer

# PostgreSQL silently truncates longer identifiers: a truncated target name
# could collide with another database, so refuse it up front.
_MAX_IDENTIFIER_BYTES = 63
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# An object key (apim_upgrade.postgres.catalog.SchemaObject.key): kind:table.name.
_OBJECT_KEY = re.compile(r"^(?:table:[^.]+|sequence:.+|(?:column|index|constraint):[^.]+\..+)$")


class _Section(BaseModel):
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


class PostgresSection(_Section):
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


class DatabasePair(_Section):
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


class Databases(_Section):
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


class CopySection(_Section):
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


class KeystoreSection(_Section):
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


class MigrationEnvironmentSection(_Section):
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


class SqlScript(_Section):
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


class SchemaUpgradeSection(_Section):
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


class Target440Section(_Section):
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


class NodeCommands(_Section):
    """One node and the commands that manage it (systemd, ssh, kubectl, ...: run as given)."""

    name: str = Field(min_length=1, description="Node name in logs, the audit trail and the approval form.")
    start: list[str] = Field(min_length=1, description="Argument list that starts the node.")
    stop: list[str] = Field(min_length=1, description="Argument list that stops the node.")
    health_url: str = Field(description="GET answers 2xx while the node is up.")
    publisher_url: str | None = Field(None, description="Publisher REST API listing (control plane only).")
    expect_version: str | None = Field(None, description="Product version its health endpoint must report.")
    log_file: Path | None = Field(
        None, description="Server log readable from here: watched for the server-up marker after a start."
    )
    carbon_home: str | None = Field(
        None,
        description="The node's home on its host; when set, the cutover checks that the server answering the "
        "health URL is this home (from the identity the health answer carries, or, for a node on this host, "
        "from the process behind the port / <carbon_home>/wso2carbon.pid).",
    )


class GatewayNode(NodeCommands):
    """A 4.4.0 gateway node; ``replaces``: the 4.0.0 gateway it takes over from (side by side)."""

    replaces: NodeCommands | None = Field(
        None,
        description="The 4.0.0 gateway this node replaces (same host and ports, another home): the cutover stops "
        "it before starting this node, rollback stops this node and starts it again. Without it the node is "
        "restarted in place and rollback leaves it as it is.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_plain_node(cls, data: Any) -> Any:
        # A plain NodeCommands is a gateway node that replaces nothing.
        if isinstance(data, NodeCommands) and not isinstance(data, GatewayNode):
            return data.model_dump()
        return data


class GatewayGroup(_Section):
    """A gateway environment's nodes, restarted one at a time."""

    name: str = Field(min_length=1, description="Group name (the gateway environment).")
    nodes: list[GatewayNode] = Field(min_length=1, description="Its nodes, in restart order.")


class RehearsalNodes(_Section):
    """Nodes a rehearsal may stop and start instead of the real ones (stand-ins, a staging estate).

    They must be other nodes than production's: no shared health URL, host:port or command.
    """

    control_plane_400: list[NodeCommands] = Field(min_length=1, description="Staging 4.0.0 control plane nodes.")
    control_plane_440: list[NodeCommands] = Field(
        min_length=1, description="The rehearsal's own 4.4.0 control plane nodes."
    )
    gateway_groups: list[GatewayGroup] = Field(default_factory=list, description="The rehearsal's gateway groups.")
    server_offset: int | None = Field(
        None,
        ge=0,
        description="[server] offset of the rehearsal's copy of the 4.4.0 home, when its nodes share a host "
        "with production's (so it never listens on production's ports).",
    )


class CutoverSection(_Section):
    """The switch: stop 4.0.0's control plane, start 4.4.0's, restart every gateway."""

    rehearsal: RehearsalNodes | None = Field(
        None, description="Used instead of the nodes below in rehearsal mode; without it rehearsals skip cutover."
    )
    control_plane_400: list[NodeCommands] = Field(
        min_length=1, description="The 4.0.0 control plane nodes, stopped before 4.4.0 starts."
    )
    control_plane_440: list[NodeCommands] = Field(min_length=1, description="The 4.4.0 control plane nodes.")
    gateway_groups: list[GatewayGroup] = Field(
        default_factory=list, description="Gateway groups, restarted one node at a time after the control plane."
    )
    unattended: bool = Field(False, description="Approve automatically (rehearsals only).")
    accept_drift: bool = Field(False, description="Go on although the sources changed after they were copied.")
    approval_timeout_seconds: int = Field(
        3600, ge=10, description="How long the paused cutover waits for approve/reject before the run fails."
    )
    node_timeout_seconds: float = Field(600, gt=0, description="Per node: command plus health wait.")
    session_wait_seconds: float = Field(
        300,
        gt=0,
        description="Inside the window: how long to wait, after 4.0.0's control plane stopped, until none of its "
        "sessions remain on the sources (the stragglers are then listed; copy.terminate_connections ends them).",
    )


class ReportSection(_Section):
    """What the run report draws besides the audit trail."""

    traffic_ledger: Path | None = Field(
        None,
        description="A traffic ledger (JSON lines, apim_upgrade/proof/ledger.py) that clients of the estate append "
        "to: the report charts its calls per second and failures, the cutover window shaded. Relative to the plan.",
    )


def _labelled_nodes(nodes: CutoverSection | RehearsalNodes, prefix: str) -> list[tuple[str, NodeCommands]]:
    labelled = [(f"{prefix}.control_plane_400[{i}]", n) for i, n in enumerate(nodes.control_plane_400)]
    labelled += [(f"{prefix}.control_plane_440[{i}]", n) for i, n in enumerate(nodes.control_plane_440)]
    for g, group in enumerate(nodes.gateway_groups):
        for i, n in enumerate(group.nodes):
            labelled.append((f"{prefix}.gateway_groups[{g}].nodes[{i}]", n))
            if n.replaces is not None:
                labelled.append((f"{prefix}.gateway_groups[{g}].nodes[{i}].replaces", n.replaces))
    return labelled


def _node_identity(node: NodeCommands) -> dict[str, str]:
    """What makes a node this node: its URLs, the host:port they reach, its commands."""
    facts = {"health URL": node.health_url, "start command": " ".join(node.start), "stop command": " ".join(node.stop)}
    for label, url in (("health", node.health_url), ("publisher", node.publisher_url)):
        if url:
            parsed = urlsplit(url)
            if parsed.hostname:
                facts[f"{label} host:port"] = (
                    f"{parsed.hostname}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
                )
    return facts


def _shared_nodes(production: list[tuple[str, NodeCommands]], rehearsal: list[tuple[str, NodeCommands]]) -> list[str]:
    clashes = []
    for r_label, r_node in rehearsal:
        r_facts = _node_identity(r_node)
        for p_label, p_node in production:
            p_facts = _node_identity(p_node)
            same = sorted(
                {
                    k.split(" ", 1)[1] if k.endswith("host:port") else k
                    for k, v in r_facts.items()
                    if v in p_facts.values()
                }
            )
            if same:
                clashes.append(f"{r_label} '{r_node.name}' shares its {', '.join(same)} with {p_label} '{p_node.name}'")
    return clashes


class Plan(_Section):
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
        rehearsal = _labelled_nodes(self.cutover.rehearsal, "cutover.rehearsal")
        if self.target_440 is not None:
            # A rehearsal runs its own copy of the 4.4.0 home: commands naming the home name that copy.
            own = RehearsalNodes.model_validate(
                replace_in_strings(
                    self.cutover.rehearsal.model_dump(mode="json"), str(self.target_440.home), "<rehearsal copy>"
                )
            )
            rehearsal = _labelled_nodes(own, "cutover.rehearsal")
        clashes = _shared_nodes(_labelled_nodes(self.cutover, "cutover"), rehearsal)
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
        elif isinstance(value, _Section):
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
