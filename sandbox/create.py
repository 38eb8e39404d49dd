"""``apim-upgrade sandbox create``: a 4.0.0 estate plus a ready plan file."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tomli_w

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db, queries
from apim_upgrade.runtime.atomic import write_atomically
from apim_upgrade.wso2.distribution import ddl_file
from sandbox.errors import SandboxError
from sandbox.estate import EstateSummary, build_estate, drop_estate
from sandbox.nodes import build_nodes, stop_everything
from sandbox.roles import create_node_role, drop_node_role, ensure_owner, node_role_name

OWNER = "wso2_apim"
PASSWORD_ENV = "APIM_UPGRADE_PG_PASSWORD"
SECRETS_FILE = "sandbox.env"
TRAFFIC_LEDGER = "traffic.jsonl"  # beside the plan
# Names of the variables the JVM phases read; their sandbox values live in sandbox.env.
SECRET_VARIABLES = {
    "admin": "APIM_SANDBOX_ADMIN_PASSWORD",
    "db": "APIM_SANDBOX_DB_PASSWORD",
    "keystore": "APIM_SANDBOX_KEYSTORE_PASSWORD",
}


def sandbox_names(prefix: str) -> dict[str, str]:
    return {
        "apim_source": f"{prefix}_am_db",
        "shared_source": f"{prefix}_shared_db",
        "apim_target": f"{prefix}_am",
        "shared_target": f"{prefix}_shared",
    }


def create_sandbox(
    directory: Path,
    server: db.PgServer,
    *,
    scale: int = 1,
    dbscripts: Path | None = None,
    prefix: str | None = None,
    with_distribution: bool = True,
) -> tuple[Path, EstateSummary]:
    """Build the estate, write ``plan.toml`` and ``estate.json`` into ``directory``.

    ``with_distribution`` also builds the stand-in 4.2.0 pack and migration kits the
    JVM phases need (skipped by tests that only exercise the database phase).
    """
    if scale < 1:
        raise SandboxError(f"--scale must be 1 or more, not {scale}")
    directory = directory.resolve()
    plan_path = directory / "plan.toml"
    if plan_path.exists():
        raise SandboxError(f"{plan_path} already exists; choose an empty --dir or remove it")
    prefix = prefix or f"apim_sb_{secrets.token_hex(3)}"
    if not re.fullmatch(r"[A-Za-z0-9_]{1,40}", prefix):
        raise SandboxError(f"sandbox prefix '{prefix}' must be 1-40 letters, digits or underscores")
    names = sandbox_names(prefix)
    ensure_owner(server, OWNER)
    summary = build_estate(
        server,
        apim_db=names["apim_source"],
        shared_db=names["shared_source"],
        scale=scale,
        dbscripts=dbscripts,
        owner=OWNER,
    )
    try:
        _write_plan(directory, plan_path, prefix, names, server, summary, dbscripts, with_distribution)
    except BaseException:
        # Nothing half-written: no estate without its plan, no plan without its estate.
        drop_estate(server, names["apim_source"], names["shared_source"])
        drop_node_role(server, node_role_name(prefix))
        plan_path.unlink(missing_ok=True)
        raise
    return plan_path, summary


def _write_plan(
    directory: Path,
    plan_path: Path,
    prefix: str,
    names: dict[str, str],
    server: db.PgServer,
    summary: EstateSummary,
    dbscripts: Path | None,
    with_distribution: bool,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    plan = _plan_document(prefix, names, server)
    if with_distribution:
        # The nodes and the migration JVM log in as a role of their own (acting as the estate's
        # owner, so whatever they create is owned like the rest of the schema), never as the
        # maintenance user: its password is never written for them.
        jvm_user = node_role_name(prefix)
        me = _migration_environment(directory, dbscripts, jvm_user, create_node_role(server, jvm_user, OWNER))
        secret_values = me.pop("_secrets")
        plan["migration_environment"] = me
        plan["schema_upgrade"] = _schema_upgrade(directory, server, dbscripts)
        sections = build_nodes(
            directory,
            sources={"apim": names["apim_source"], "shared": names["shared_source"]},
            host=server.host,
            port=server.port,
            db_user=jvm_user,
            db_password_env=SECRET_VARIABLES["db"],
            jdbc_driver=directory / me["jdbc_driver"],
            dbscripts={v: _pack_dbscripts(dbscripts, v) for v in ("4.0.0", "4.4.0")},
            java_home=Path(me["java_home"]),
        )
        secret_values.update(sections.pop("_secrets"))  # the nodes' environment (like a systemd unit's)
        plan.update(sections)
        # What its traffic generator (sandbox/traffic.py) appends to; the report charts it.
        plan["report"] = {"traffic_ledger": TRAFFIC_LEDGER}
        write_atomically(  # never readable by others, not even while it is written
            directory / SECRETS_FILE,
            "# Throwaway secrets of this sandbox (never of a real estate): source this file.\n"
            + "".join(f"export {k}='{v}'\n" for k, v in secret_values.items()),
            mode=0o600,
        )
    write_atomically(plan_path, _HEADER + tomli_w.dumps(plan))
    write_atomically(directory / "estate.json", json.dumps(asdict(summary), indent=1, default=str))
    load_plan(plan_path)  # what we wrote must be a valid plan


def destroy_sandbox(plan_path: Path) -> list[str]:
    """Stop the sandbox's nodes, drop its sources and any copies made from them."""
    from apim_upgrade.estate_lock import estate_lock

    plan = load_plan(plan_path)
    with estate_lock(plan, "sandbox destroy"):  # never under a run that is still working on it
        stop_everything(plan_path.parent)
        if plan.work_dir.exists():  # rehearsals run copies of the 4.4.0 home under the work directory
            stop_everything(plan.work_dir)
        names = [p.source for p in plan.databases.roles().values()]
        targets = [p.target for p in plan.databases.roles().values()]
        names += targets + rehearsal_copies(plan.server(), targets)
        drop_estate(plan.server(), *names)
        if plan.migration_environment is not None:  # the nodes' own login role, once its databases are gone
            drop_node_role(plan.server(), plan.migration_environment.db_username)
    return names


def rehearsal_copies(server: db.PgServer, targets: list[str]) -> list[str]:
    """Every dated rehearsal copy (``<target>_rehearsal_<date>``) of these targets."""
    patterns = [t.replace("_", r"\_") + r"\_rehearsal\_%" for t in targets]
    with db.session(server, "postgres", read_only=True) as conn:
        return [str(r[0]) for r in db.fetch_all(conn, queries.REHEARSAL_COPIES, (patterns,))]


_HEADER = """\
# apim-upgrade plan for a sandbox estate (generated by `apim-upgrade sandbox create`).
# Sources are generated 4.0.0 databases; targets are the copies the upgrade works on.
"""


def _plan_document(prefix: str, names: dict[str, str], server: db.PgServer) -> dict[str, Any]:
    postgres: dict[str, Any] = {"host": server.host, "port": server.port, "user": server.user}
    if server.password is not None:
        postgres["password_env"] = PASSWORD_ENV  # the value itself never goes in the file
    if server.sslmode:
        postgres["sslmode"] = server.sslmode
    return {
        "name": prefix,
        "strategy": "side-by-side",
        "work_dir": "work",
        "postgres": postgres,
        "databases": {
            "apim": {"source": names["apim_source"], "target": names["apim_target"], "owner": OWNER},
            "shared": {"source": names["shared_source"], "target": names["shared_target"], "owner": OWNER},
        },
        "copy": {"method": "auto", "strategy": "default", "terminate_connections": False},
    }


def sandbox_secrets(directory: Path) -> dict[str, str]:
    """The sandbox's throwaway secrets (``DIR/sandbox.env``), for the demo and the tests."""
    values = {}
    for line in (directory / SECRETS_FILE).read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            values[name] = value.strip("'")
    return values


def _java_home(directory: Path) -> Path:
    """The machine's JDK, or a stand-in JDK folder when none is installed (the stand-in needs none)."""
    java = shutil.which("java")
    if java:
        return Path(os.path.realpath(java)).parent.parent
    home = directory / "jdk-standin"
    (home / "bin").mkdir(parents=True, exist_ok=True)
    script = home / "bin" / "java"
    script.write_text("#!/bin/sh\necho 'openjdk version \"17.0.0\" (apim-upgrade sandbox stand-in JDK)'\n")
    script.chmod(0o755)
    return home


UPGRADE_STEPS = (("4.2.0", "4.3.0"), ("4.3.0", "4.4.0"))
COMPACT_TREE = Path(__file__).resolve().parent / "sql" / "compact"


def _schema_upgrade(directory: Path, server: db.PgServer, dbscripts: Path | None) -> dict[str, Any]:
    """The reference DDL of each version, and stand-in vendor scripts generated from it.

    WSO2's 4.2.0->4.3.0 and 4.3.0->4.4.0 scripts are private, so the sandbox writes its own
    from the difference between the versions' DDL (see sandbox/schema_sync.py).
    """
    from sandbox.schema_sync import generate_upgrade_script

    versions = ["4.0.0", "4.2.0", "4.3.0", "4.4.0"]
    for version in versions:
        source = _pack_dbscripts(dbscripts, version) if dbscripts else COMPACT_TREE / version
        assert source is not None
        shutil.copytree(source, directory / "dbscripts" / version, dirs_exist_ok=True)
    scripts = []
    for old, new in UPGRADE_STEPS:
        out = directory / "scripts" / f"wso2am-{old}-to-{new}.postgresql.sql"
        out.parent.mkdir(parents=True, exist_ok=True)
        generate_upgrade_script(
            server,
            ddl_file(directory / "dbscripts" / old, "apim"),
            ddl_file(directory / "dbscripts" / new, "apim"),
            out,
            title=f"WSO2 API-M {old} -> {new} (API-M database)",
        )
        scripts.append(
            {
                "from_version": old,
                "to_version": new,
                "path": str(out.relative_to(directory)),
                "dbscripts": f"dbscripts/{new}",
            }
        )
    return {
        "start_version": "4.2.0",
        "scripts": scripts,
        "target_dbscripts": "dbscripts/4.4.0",
        "source_dbscripts": "dbscripts/4.0.0",
    }


def _pack_dbscripts(dbscripts: Path | None, version: str) -> Path | None:
    """The DDL the stand-in pack of ``version`` ships: beside the 4.0.0 one given, or our compact tree."""
    if dbscripts is None:
        return None
    if version == "4.0.0":
        return Path(dbscripts).resolve()
    sibling = Path(dbscripts).resolve().parent / version
    if not ddl_file(sibling, "apim").is_file():
        raise SandboxError(
            f"--dbscripts {dbscripts}: the {version} DDL is expected beside it at {sibling} "
            "(a folder per version, like shared/wso2/dbscripts/); add it or omit --dbscripts"
        )
    return sibling


def _migration_environment(directory: Path, dbscripts: Path | None, jvm_user: str, jvm_password: str) -> dict[str, Any]:
    """Stand-in 4.2.0 pack and migration kits, and the plan section that points at them."""
    from sandbox.distribution.build import build_distribution, build_migration_kit

    pack = build_distribution("4.2.0", directory / "packs", dbscripts=_pack_dbscripts(dbscripts, "4.2.0"))
    kit = build_migration_kit(directory / "kit", from_dbscripts=_pack_dbscripts(dbscripts, "4.0.0"))
    values = {  # written to sandbox.env by the caller, with the nodes' own
        SECRET_VARIABLES["admin"]: secrets.token_urlsafe(12),
        SECRET_VARIABLES["db"]: jvm_password,  # the nodes' own role's, never the maintenance user's
        SECRET_VARIABLES["keystore"]: kit.store_password,
    }
    rel = lambda p: str(Path(p).relative_to(directory))  # noqa: E731 - paths stay relative to the plan
    keystore_env = SECRET_VARIABLES["keystore"]
    return {
        "distribution_zip": rel(pack),
        "jdbc_driver": rel(kit.jdbc_driver),
        "java_home": str(_java_home(directory)),
        "keystores": [rel(k) for k in kit.keystores],
        "keystore_tls": {
            "file_name": "tls-keystore.jks",
            "alias": "serverCert",
            "password_env": keystore_env,
        },
        "keystore_primary": {
            "file_name": "internal-keystore.jks",
            "alias": "encryptkey",
            "password_env": keystore_env,
        },
        "truststore": {"file_name": "client-truststore.jks", "password_env": keystore_env},
        "admin_password_env": SECRET_VARIABLES["admin"],
        "db_username": jvm_user,
        "db_password_env": SECRET_VARIABLES["db"],
        "gateway_environments": [_gateway(name) for name in ("internal", "external")],
        "identity_migration_resources": rel(kit.identity_resources),
        "identity_migration_jar": rel(kit.identity_jar),
        "api_migration_resources": rel(kit.api_resources),
        "api_migration_jar": rel(kit.api_jar),
        "jvm_timeout_seconds": 300,
        "cleanup": "delete",
        "_secrets": values,
    }


def _gateway(name: str) -> dict[str, Any]:
    """A gateway environment as the field guide configures its internal and external groups."""
    return {
        "name": name,
        "type": "hybrid",
        "display_in_api_console": True,
        "description": "This is a hybrid gateway that handles both production and sandbox token traffic.",
        "show_as_token_endpoint_url": True,
        "service_url": "https://localhost:${mgt.transport.https.port}/services/",
        "username": "${admin.username}",
        "password": "${admin.password}",
        "ws_endpoint": "ws://localhost:9099",
        "wss_endpoint": "wss://localhost:8099",
        "http_endpoint": "http://localhost:${http.nio.port}",
        "https_endpoint": "https://localhost:${https.nio.port}",
        "websub_event_receiver_http_endpoint": "http://localhost",
        "websub_event_receiver_https_endpoint": "https://localhost",
    }
