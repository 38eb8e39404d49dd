"""Preflight: everything that can be known before anything is written.

Each finding is one line that names the problem and the fix. Errors stop
the run; warnings are printed and the run may go on.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from apim_upgrade.errors import ApimUpgradeError, PreflightError
from apim_upgrade.phases import PhaseInput, inputs_of
from apim_upgrade.plan import Plan
from apim_upgrade.plan.sections import MigrationEnvironmentSection
from apim_upgrade.postgres import db, queries, snapshot_copy, sqlscript
from apim_upgrade.postgres.copies import CopyState, copy_state
from apim_upgrade.proof.audit import pending_copies
from apim_upgrade.wso2 import distribution

MIN_SERVER_VERSION = 130000  # DROP DATABASE ... WITH (FORCE)
STRATEGY_SERVER_VERSION = 150000
# The copy needs the source size again, plus room for WAL and the indexes.
DISK_HEADROOM = 1.2
# Below this the run would die half-way writing its audit trail, snapshots or the 4.2.0 home.
MIN_WORK_DIR_FREE = 64 * 1024 * 1024
MIGRATION_VERSION = "4.2.0"  # the pack the migration environment must be built from


@dataclass(frozen=True)
class Check:
    """One preflight check and its result (a pre-migration API finding is wso2/findings.Finding)."""

    severity: str  # "error" | "warning" | "info" | "ok"
    check: str
    message: str

    def line(self) -> str:
        return f"[{self.severity}] {self.check}: {self.message}"


@dataclass
class PreflightReport:
    findings: list[Check]
    sessions: dict[str, list[tuple[int, str, str, str]]]
    source_bytes: dict[str, int] = field(default_factory=dict)  # pg_database_size of each source now

    @property
    def errors(self) -> list[Check]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def run_preflight(plan: Plan, *, terminate_connections: bool | None = None) -> PreflightReport:
    """Check server, role, databases, sessions and disk; never writes."""
    terminate = plan.copy_options.terminate_connections if terminate_connections is None else terminate_connections
    findings: list[Check] = []
    sessions: dict[str, list[tuple[int, str, str, str]]] = {}

    def add(severity: str, check: str, message: str) -> None:
        findings.append(Check(severity, check, message))

    try:
        server = plan.server()
        conn = db.connect(server, plan.postgres.maintenance_db, read_only=True, autocommit=True)
    except ApimUpgradeError as exc:
        add("error", "connectivity", str(exc))
        return PreflightReport(findings, sessions)

    with conn:
        version_num, version = db.fetch_one(conn, queries.SERVER_VERSION) or (0, "?")
        if version_num < MIN_SERVER_VERSION:
            add("error", "server version", f"{version} is older than PostgreSQL 13; upgrade the server")
        else:
            add("ok", "server version", version.split(",")[0])
        if plan.copy_options.strategy != "default" and version_num < STRATEGY_SERVER_VERSION:
            add(
                "error",
                "copy strategy",
                f"copy.strategy = '{plan.copy_options.strategy}' needs PostgreSQL 15+; set copy.strategy = \"default\"",
            )

        superuser, createdb = db.fetch_one(conn, queries.ROLE_PRIVILEGES) or (False, False)
        if not (superuser or createdb):
            add(
                "error",
                "privileges",
                f"role '{server.user}' has neither CREATEDB nor SUPERUSER: run "
                f"ALTER ROLE {_quoted(server.user)} CREATEDB; WSO2's migration also needs the "
                "uuid-ossp extension, which a DBA must create in the copies if the role "
                "cannot",
            )
        uuid = db.fetch_one(conn, queries.UUID_OSSP_AVAILABLE)
        if uuid is None:
            add(
                "error",
                "uuid-ossp",
                "extension uuid-ossp is not available on the server; WSO2's migration needs it: "
                "install the PostgreSQL contrib package",
            )
        elif not superuser:
            add(
                "warning",
                "uuid-ossp",
                f"role '{server.user}' is not a superuser: WSO2's migration needs uuid-ossp; "
                "make sure the copies' owner may CREATE EXTENSION (trusted since PG 13) or "
                "have a DBA create it",
            )

        for role, pair in plan.databases.roles().items():
            if not db.fetch_one(conn, queries.ROLE_EXISTS, (pair.owner,)):
                add(
                    "error",
                    f"{role} owner",
                    f"role '{pair.owner}' (databases.{role}.owner) does not exist; "
                    f"CREATE ROLE {_quoted(pair.owner)} or name an existing role",
                )

        names = [p.source for p in plan.databases.roles().values()]
        names += [p.target for p in plan.databases.roles().values()]
        info = {r[0]: r for r in db.fetch_all(conn, queries.DATABASE_INFO, (names,))}
        pending = pending_copies(plan.audit_path)
        source_bytes = 0
        sizes: dict[str, int] = {}
        for role, pair in plan.databases.roles().items():
            if pair.source not in info:
                add(
                    "error",
                    f"{role} source",
                    f"database '{pair.source}' (databases.{role}.source) does not exist; fix the name",
                )
            else:
                source_bytes += int(info[pair.source][1])
                sizes[pair.source] = int(info[pair.source][1])
            state = copy_state(info.get(pair.target), plan, pair.source, pair.target in pending)
            if state is CopyState.FOREIGN:
                add(
                    "error",
                    f"{role} target",
                    f"database '{pair.target}' already exists and was not made by apim-upgrade "
                    f"for plan '{plan.name}'; drop it or choose another databases.{role}.target",
                )
            elif state is CopyState.VERIFIED:
                add("ok", f"{role} target", f"'{pair.target}' exists and is verified: a rerun skips it")
            elif state is CopyState.INCOMPLETE:
                add("warning", f"{role} target", f"'{pair.target}' is an unfinished copy: it will be rebuilt")

        other = db.fetch_all(conn, queries.OTHER_SESSIONS, ([p.source for p in plan.databases.roles().values()],))
        for datname, pid, app, addr, user, _state in other:
            sessions.setdefault(datname, []).append((pid, app, addr, user))
        findings += _session_findings(plan, sessions, terminate)
        if plan.copy_options.method == "snapshot" or (plan.copy_options.method == "auto" and sessions):
            findings += _snapshot_copy_findings(server, int(version_num) // 10000, bool(superuser))
            findings += _dump_space_findings(plan.work_dir, source_bytes)

        data_dir = (db.fetch_one(conn, queries.DATA_DIRECTORY) or (None,))[0]
        findings.append(_disk_finding(server, data_dir, source_bytes))
    findings.append(_work_dir_finding(plan.work_dir))
    return PreflightReport(findings, sessions, sizes)


def _session_findings(plan: Plan, sessions: dict[str, list[tuple[int, str, str, str]]], terminate: bool) -> list[Check]:
    """Other sessions on a source: expected with the snapshot copy, in the way of a template copy."""
    method = plan.copy_options.method
    findings: list[Check] = []
    if terminate and method != "template":
        findings.append(
            Check(
                "warning",
                "sessions",
                f"terminate_connections is ignored with copy.method = '{method}': no session is ever "
                "terminated (a source with other sessions is copied online from an exported snapshot)",
            )
        )
    for datname, rows in sessions.items():
        listed = ", ".join(f"{app} from {addr} (pid {pid}, user {user})" for pid, app, addr, user in rows)
        if method != "template":
            findings.append(
                Check(
                    "info",
                    "sessions",
                    f"{len(rows)} other session(s) connected to '{datname}': {listed}; copy.method = "
                    f"'{method}' copies it online from one exported snapshot, nobody is disconnected",
                )
            )
        elif terminate:
            findings.append(
                Check("warning", "sessions", f"{len(rows)} session(s) on '{datname}' will be terminated: {listed}")
            )
        else:
            findings.append(
                Check(
                    "error",
                    "sessions",
                    f"{len(rows)} other session(s) connected to '{datname}' "
                    f'(CREATE DATABASE ... TEMPLATE needs none): {listed}; set method = "auto" under '
                    f"[copy] in {plan.source_path} to copy a live source online, stop those clients, or set "
                    "terminate_connections = true under [copy] (every command and deployment honours it; "
                    "`run` and `plan check` also take --terminate-connections)",
                )
            )
    return findings


def _snapshot_copy_findings(server: db.PgServer, server_major: int, superuser: bool) -> list[Check]:
    """The snapshot copy runs pg_dump and pg_restore, and restores owners as the maintenance role."""
    findings: list[Check] = []
    try:
        tools = [str(snapshot_copy.client_tool(name, server_major)) for name in ("pg_dump", "pg_restore")]
    except ApimUpgradeError as exc:
        findings.append(Check("error", "copy tools", str(exc)))
    else:
        findings.append(Check("ok", "copy tools", ", ".join(tools)))
    if not superuser:
        findings.append(
            Check(
                "warning",
                "copy owners",
                f"role '{server.user}' is not a superuser: pg_restore gives each object its owner in the "
                "source, which needs membership in each owning role (GRANT owner TO the role)",
            )
        )
    return findings


def _dump_space_findings(work_dir: Path, source_bytes: int) -> list[Check]:
    """The snapshot copy's dump lives under the work directory until it is restored (uncompressed)."""
    probe = work_dir if work_dir.exists() else next((p for p in work_dir.parents if p.exists()), None)
    if probe is None:
        return []  # the work_dir finding reports it
    free = shutil.disk_usage(probe).free
    if free < source_bytes:
        return [
            Check(
                "warning",
                "dump space",
                f"{work_dir} has {_human(free)} free; the snapshot copy dumps a source there before restoring "
                f"it (up to {_human(source_bytes)}, the sources' size): free space or point work_dir elsewhere",
            )
        ]
    return []


def customisation_findings(plan: Plan) -> list[Check]:
    """One warning per customisation of the sources (an object WSO2's 4.0.0 DDL does not have).

    Reads the sources in read-only snapshots; the 4.0.0 reference is loaded into a scratch
    database (cached), as the source-400 conformance check of prepare-databases does.
    """
    from apim_upgrade.proof.customisations import find_customisations  # late: loads the DDL machinery

    section = plan.schema_upgrade
    if section is None:
        return []
    if section.source_dbscripts is None:
        return [
            Check(
                "warning",
                "customisations",
                "[schema_upgrade] source_dbscripts is not set: the sources are not compared with WSO2's 4.0.0 "
                "DDL, so customisations are not listed and the JVM migration gates allow no removal by name; "
                "point it at the 4.0.0 pack's dbscripts/ folder",
            )
        ]
    try:
        found = find_customisations(plan)
    except ApimUpgradeError as exc:
        return [Check("error", "customisations", str(exc))]
    if not found:
        return [Check("ok", "customisations", "the sources have nothing WSO2's 4.0.0 DDL does not")]
    return [Check("warning", "customisation", c.line()) for c in found]


def check_phase_inputs(plan: Plan, phases: list[str] | tuple[str, ...]) -> None:
    """The files, variables and scripts the selected phases need, checked before anything is written.

    Without this a wrong pack or a missing keystore is found only after the copies were
    made and recorded, an hour into a run. SQL script problems raise ScriptError (exit 8),
    everything else one PreflightError listing every problem. Sections the plan does not
    have are not checked (their phases are refused or skipped elsewhere).
    """
    from apim_upgrade.postgres.schema_runner import check_order  # late: schema_runner is a heavier import

    inputs = inputs_of(phases)
    section = plan.schema_upgrade
    if section is not None and PhaseInput.VENDOR_SCRIPTS in inputs:
        scripts = [sqlscript.load_script(s.path, s.from_version, s.to_version) for s in section.scripts]
        check_order(scripts, section.start_version)
    problems: list[str] = []
    work_dir = _work_dir_finding(plan.work_dir)
    if work_dir.severity == "error":
        problems.append(f"{work_dir.check}: {work_dir.message}")
    me = plan.migration_environment
    if me is not None and PhaseInput.MIGRATION_HOME in inputs:
        problems += _environment_problems(me)
    if me is not None and PhaseInput.JVM_SECRETS in inputs:
        missing = [n for n in me.secret_variables() if n not in os.environ]
        if missing:
            problems.append(
                f"secrets: environment variable(s) {', '.join(missing)} (named in [migration_environment]) "
                "are not set; export them before running the JVM phases"
            )
    if section is not None and PhaseInput.VENDOR_SCRIPTS in inputs:
        folders: list[tuple[str, Path | None]] = [("schema_upgrade.target_dbscripts", section.target_dbscripts)]
        folders += [(f"schema_upgrade.scripts[{i}].dbscripts", s.dbscripts) for i, s in enumerate(section.scripts)]
        for key, folder in folders:
            if folder is not None and not folder.is_dir():
                problems.append(f"dbscripts: {folder} is not a folder; fix {key}")
    if problems:
        raise PreflightError(problems)


def _environment_problems(me: MigrationEnvironmentSection) -> list[str]:
    problems: list[str] = []
    for check, verify, path in (
        ("migration pack", lambda p: distribution.inspect_pack(p, MIGRATION_VERSION), me.distribution_zip),
        ("jdbc driver", distribution.check_jdbc_driver, me.jdbc_driver),
    ):
        try:
            verify(path)
        except distribution.DistributionError as exc:
            problems.append(f"{check}: {exc}")
    missing = [str(k) for k in me.keystores if not k.is_file()]
    if missing:
        problems.append(
            f"keystores: keystore file(s) not found: {', '.join(missing)}; fix migration_environment.keystores"
        )
    # The pack's own *.jks are removed from the home: deployment.toml may only name copied ones.
    copied = sorted(k.name for k in me.keystores)
    for key in ("keystore_tls", "keystore_primary", "truststore"):
        store = getattr(me, key)
        if store is not None and store.file_name not in copied:
            problems.append(
                f"{key}: migration_environment.{key}.file_name '{store.file_name}' is not one of the keystores "
                f"copied into the home ({', '.join(copied) or 'none'}); name the copied file or add it to "
                "migration_environment.keystores"
            )
    for key in ("identity_migration_resources", "api_migration_resources"):
        if not getattr(me, key).is_dir():
            problems.append(f"migration kit: {getattr(me, key)} is not a folder; fix migration_environment.{key}")
    for key in ("identity_migration_jar", "api_migration_jar"):
        if not getattr(me, key).is_file():
            problems.append(f"migration kit: {getattr(me, key)} does not exist; fix migration_environment.{key}")
    return problems


def _disk_finding(server: db.PgServer, data_dir: str | None, source_bytes: int) -> Check:
    need = int(source_bytes * DISK_HEADROOM)
    local = server.host in ("127.0.0.1", "localhost", "::1") or server.host.startswith("/")
    if not (local and data_dir and Path(data_dir).exists()):
        return Check(
            "warning",
            "disk",
            f"cannot measure free space on a remote server; make sure about {_human(need)} "
            "are free where the copies will live",
        )
    free = shutil.disk_usage(data_dir).free
    if free < need:
        return Check(
            "error",
            "disk",
            f"{_human(free)} free under {data_dir}, the copies need about {_human(need)} "
            f"(sources {_human(source_bytes)} + 20%); free space or use another tablespace",
        )
    return Check("ok", "disk", f"{_human(free)} free, copies need about {_human(need)}")


def _work_dir_finding(work_dir: Path) -> Check:
    probe = work_dir if work_dir.exists() else next((p for p in work_dir.parents if p.exists()), None)
    if probe is None or not os.access(probe, os.W_OK):
        return Check("error", "work_dir", f"{work_dir} is not writable; fix work_dir in the plan")
    free = shutil.disk_usage(probe).free
    if free < MIN_WORK_DIR_FREE:
        return Check(
            "error",
            "work_dir",
            f"{work_dir} has {_human(free)} free; the audit trail, snapshots, logs and the unpacked "
            f"4.2.0 home need at least {_human(MIN_WORK_DIR_FREE)}: free space or point work_dir elsewhere",
        )
    return Check("ok", "work_dir", f"{work_dir} ({_human(free)} free)")


def _quoted(name: str) -> str:
    """A name as a SQL identifier in a suggested command: safe to paste even if hostile."""
    return '"' + name.replace('"', '""') + '"'


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
