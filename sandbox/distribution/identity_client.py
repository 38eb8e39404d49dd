"""The stand-in IS (identity) migration client: ``-Dmigrate -Dcomponent=identity``.

Runs during bundle activation, before the console URLs, as the real one does; it
brings the identity tables of the API-M DB (IDN_, SP_, CM_, IDP_, FIDO*, WF_) and
every UM_/REG_ table of the shared DB to the pack's dbscripts/ schema. Console lines
are the real client's strings (shared/wso2/console-reference.md §5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.wso2.distribution import APIM_DDL, SHARED_DDL
from sandbox.distribution.migrations import (
    MigrationStepFailed,
    SyncTarget,
    converge,
    database,
    from_ddl,
    prefixed,
)
from sandbox.distribution.runtime import Context, ServerExit

IDENTITY_APIM_PREFIXES = ("idn_", "sp_", "cm_", "idp_", "fido", "wf_")
IDENTITY_SHARED_PREFIXES = ("um_", "reg_")
IS_CLIENT = "org.wso2.carbon.is.migration.MigrationClientImpl"
IS_LOG = " WSO2 Product Migration Service Task : "  # Constant.MIGRATION_LOG, leading space and all
IS_VERSIONS = ("5.10.0", "5.11.0", "6.0.0", "6.1.0")
DOTS = "." * 92
IS_DONE = (
    "Execution was done through all the requested version list without having unexpected issues. "
    "There may be some steps that is not executed correctly but bypass that because of enabling "
    "'continueOnError' property. Please see the above logs to more details."
)

_IS_CRASH = "org.postgresql.util.PSQLException: An I/O error occurred while sending to the backend."


def run_identity_migration(ctx: Context) -> None:
    """``-Dmigrate -Dcomponent=identity``: runs during bundle activation, before the console URLs."""
    console, home = ctx.console, ctx.carbon_home
    dropins = home / "repository" / "components" / "dropins"
    if not any(dropins.glob("org.wso2.carbon.is.migration-*.jar")):
        console.warn("IdentityCoreServiceComponent", "Waiting for migration client.")
        console.error(
            "IdentityCoreServiceComponent",
            "Error occurred while activating IdentityCoreServiceComponent: Migration client not found",
        )
        _delayed_forever(ctx)
    console.info("IdentityCoreServiceComponent", f"Executing Migration client : {IS_CLIENT}")
    try:
        settings = _identity_settings(home)
    except MigrationStepFailed as exc:
        console.error("MigrationClientImpl", str(exc))
        console.error("MigrationClientImpl", "Migration process was stopped.")
        return
    if str(settings.get("migrationEnable", "")).lower() != "true":
        return  # the client does nothing unless enabled, silently
    steps = _identity_steps(str(settings.get("currentVersion", "5.11.0")), str(settings.get("migrateVersion")))
    for _ in range(12):
        console.info("MigrationClientImpl", DOTS)
    console.info("MigrationClientImpl", "Migration Versions List.........................")
    for old, new in steps:
        console.info("MigrationClientImpl", f"{old} to {new}")
    if ctx.failure.at("identity", "exit-early"):
        console.error("MigrationClientImpl", "Migration process was stopped.")
        raise ServerExit(1)
    targets = (
        [
            SyncTarget(
                database(ctx.config.apim_db),
                ctx.dbscripts / APIM_DDL,
                prefixed(IDENTITY_APIM_PREFIXES),
                from_ddl(ctx, APIM_DDL),
            ),
            SyncTarget(
                database(ctx.config.shared_db),
                ctx.dbscripts / SHARED_DDL,
                prefixed(IDENTITY_SHARED_PREFIXES),
                from_ddl(ctx, SHARED_DDL),
            ),
        ]
        if ctx.config.has_database
        else []
    )
    try:
        for index, (old, new) in enumerate(steps):
            console.info("MigrationClientImpl", f"{IS_LOG}Start Version : {old} to {new}")
            ctx.pause(0.3)
            if index > 0:
                continue  # one diff brings every table to the pack's schema in the first step
            if not targets:
                raise MigrationStepFailed("Error while getting the data source: WSO2AM_DB is not PostgreSQL")
            if ctx.failure.at("identity", "hang"):
                ctx.hang()
            crash = (_IS_CRASH, "Migration process was stopped.")
            converge(ctx, "identity", targets, logger="MigrationClientImpl", crash_lines=crash)
            if ctx.failure.at("identity", "errors"):
                console.error("MigrationClientImpl", f"{IS_LOG}Error while executing the migration for {old}")
    except ApimUpgradeError as exc:
        console.error("MigrationClientImpl", f"{IS_LOG}{exc}")
        console.error("MigrationClientImpl", "Migration process was stopped.")
        return
    console.info("MigrationClientImpl", IS_LOG + IS_DONE)
    for _ in range(9):
        console.info("MigrationClientImpl", DOTS)


def _identity_settings(home: Path) -> dict[str, Any]:
    path = home / "migration-resources" / "migration-config.yaml"
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MigrationStepFailed(f"Error while reading the migration configuration file {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MigrationStepFailed(f"Error while parsing the migration configuration file {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise MigrationStepFailed(f"Invalid migration configuration file {path}")
    return loaded


def _identity_steps(current: str, target: str | None) -> list[tuple[str, str]]:
    versions = list(IS_VERSIONS)
    start = versions.index(current) if current in versions else 1
    end = versions.index(target) if target in versions else len(versions) - 1
    return [(versions[i], versions[i + 1]) for i in range(start, end)]


def _delayed_forever(ctx: Context) -> None:
    """The identity bundle never activates, so Carbon waits for it and reports so periodically."""
    while True:
        ctx.pause(10)
        ctx.console.warn(
            "CarbonServerManager", "Carbon initialization is delayed due to the following unsatisfied items:"
        )
        ctx.console.warn(
            "CarbonServerManager",
            "Waiting for required OSGiService: org.wso2.carbon.identity.core.util.IdentityCoreInitializedEvent",
        )
