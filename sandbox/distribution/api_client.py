"""The stand-in API-M migration client (org.wso2.carbon.apimgt.migrate.client 4.2.0.x).

``-Dmigrate -DmigrateFromVersion=4.0.0 -DmigratedVersion=4.2.0``: a startup observer,
so it runs after the console URLs and before ``WSO2 Carbon started in``. It first
makes the data-carrying changes of WSO2's 4.0.0 -> 4.1.0 pre script (renames and new
``organization`` columns) and fills them as the real V410 data migrator does, since a
plain diff would drop and re-add those columns and lose their data; then the AM_
tables are brought to the pack's dbscripts/ schema (the post script), the registry
steps are logged, and the artifact re-indexing step cleans REG_LOG as the real
reg-index.sql does. Console lines are the real client's (console-reference.md §4).
"""

from __future__ import annotations

from pathlib import Path

from psycopg import sql

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.wso2.distribution import APIM_DDL
from sandbox.distribution.migrations import (
    MigrationStepFailed,
    Statement,
    SyncTarget,
    converge,
    database,
    from_ddl,
    prefixed,
    run_in_transaction,
)
from sandbox.distribution.registry import Tenant, load_api_artifacts, load_tenants
from sandbox.distribution.runtime import Context, ServerExit

API_PREFIXES = ("am_",)
AM_LOG = "WSO2 API-M Migration Task : "
DASHES = "-" * 98
SUPPORTED_FROM = "4.0.0"
SUPPORTED_TO = "4.2.0"  # org.wso2.carbon.apimgt.migrate.client-4.2.0.x
PRE_SCRIPT = Path("pre-migration-scripts") / "migration-4.0.0_to_4.1.0" / "postgresql.sql"

# 4.0.0 -> 4.1.0 pre script, the data-carrying part: renames, then new columns that the
# data migrator fills (types as in that script; the diff then brings them to 4.2.0's).
_RENAMES = (
    ("am_key_manager", "tenant_domain", "organization"),
    ("am_block_conditions", "value", "block_condition"),
    ("am_application_attributes", "value", "app_attribute"),
)
_NEW_COLUMNS = (
    ("am_api", "organization", "VARCHAR(100)", None),
    ("am_api", "version_comparable", "VARCHAR(15)", None),
    ("am_application", "organization", "VARCHAR(100)", None),
    ("am_api_categories", "organization", "VARCHAR(100)", None),
    ("am_api_default_version", "organization", "VARCHAR(100)", None),
    ("am_gateway_environment", "organization", "VARCHAR(100)", None),
    ("am_gateway_environment", "provider", "VARCHAR(255)", "wso2"),
    ("am_key_manager", "external_reference_id", "VARCHAR(100)", None),
    ("am_key_manager", "token_type", "VARCHAR(45)", "DIRECT"),
)
# MultitenantUtils.getTenantDomain(provider): the part after the last '@', else carbon.super.
_PROVIDER_ORG = sql.SQL("coalesce(substring(api_provider from '@([^@]+)$'), 'carbon.super')")
# post-migration-common reg_db script: keep the newest REG_LOG row per path, drop action 7.
_REG_LOG_CLEANUP = sql.SQL(
    "DELETE FROM reg_log r USING (SELECT reg_log_id, reg_tenant_id, reg_action, row_number() OVER "
    "(PARTITION BY reg_tenant_id, reg_path ORDER BY reg_log_id DESC) AS rn FROM reg_log) k "
    "WHERE k.reg_log_id = r.reg_log_id AND k.reg_tenant_id = r.reg_tenant_id "
    "AND (k.rn > 1 OR k.reg_action = 7)"
)


def api_client_present(ctx: Context) -> bool:
    dropins = ctx.carbon_home / "repository" / "components" / "dropins"
    return any(dropins.glob("org.wso2.carbon.apimgt.migrate.client-*.jar"))


def run_api_migration(ctx: Context) -> None:
    """``-Dmigrate -DmigrateFromVersion=4.0.0 -DmigratedVersion=4.2.0``, a startup observer."""
    console = ctx.console
    source = ctx.properties.get("migrateFromVersion", "")
    target = ctx.properties.get("migratedVersion", ctx.version)
    console.info("APIMMigrationClient", f"{AM_LOG}Starting API-M migration from {source} to {source}")  # sic
    if ctx.failure.at("api", "exit-early") or not ctx.config.has_database:
        console.error("APIMMigrationClient", f"{AM_LOG}Error occurred while initializing DB Util")
        if ctx.config.has_database:
            raise ServerExit(1)
        return
    try:
        if source != SUPPORTED_FROM or target != SUPPORTED_TO or ctx.version != SUPPORTED_TO:
            raise MigrationStepFailed(
                f"{AM_LOG}Error while executing migration from API-Manager {source}. "
                f"This client migrates {SUPPORTED_FROM} to {SUPPORTED_TO} in a {SUPPORTED_TO} pack only "
                f"(migratedVersion={target}, pack {ctx.version})"
            )
        tenants = load_tenants(ctx.config.shared_db)
        _v410(ctx, tenants)
        _v420(ctx, tenants)
        _reindex(ctx)
    except ApimUpgradeError as exc:
        console.error("APIMMigrationClient", f"{AM_LOG}API Migration exception occurred while migrating")
        console.error("APIMMigrationClient", str(exc))
    # The real client logs this after its step loop even when a step failed (errors come first).
    console.info("APIMMigrationClient", f"{AM_LOG}Successfully completed API-M migration from {source} to {target}")


def _v410(ctx: Context, tenants: list[Tenant]) -> None:
    console, apim = ctx.console, database(ctx.config.apim_db)
    for line in (DASHES, f"{AM_LOG}Starting migration from 4.0.0 to 4.1.0...", DASHES):
        console.info("V410Migration", line)
    console.info("V410Migration", f"{AM_LOG}Starting AM_DB schema migration from 4.0.0 to 4.1.0")
    script = ctx.carbon_home / "migration-resources" / PRE_SCRIPT
    if not script.is_file():
        raise MigrationStepFailed(f"{AM_LOG}Error while running AM_DB pre migration SQL script at {script}")
    run_in_transaction(apim, "running the AM_DB pre migration script", _pre_statements)
    console.info("V410Migration", f"{AM_LOG}Starting AM_DB schema migration from 4.0.0 to 4.1.0")  # sic
    console.info("V410Migration", f"{AM_LOG}Starting AM_DB data migration from 4.0.0 to 4.1.0")
    ctx.pause(0.3)
    if ctx.failure.at("api", "hang"):
        ctx.hang()
    run_in_transaction(apim, "migrating AM_DB data", lambda cols: _data_statements(cols, tenants))
    console.info("V410Migration", f"{AM_LOG}Completed AM_DB data migration from 4.0.0 to 4.1.0")
    console.info("V410Migration", f"{AM_LOG}Starting registry resource migration from 4.0.0 to 4.1.0")
    console.info("V410Migration", f"{AM_LOG}Completed registry resource migration from 4.0.0 to 4.1.0")
    console.info("V410Migration", f"{AM_LOG}Running post migration DB scripts")
    target = SyncTarget(apim, ctx.dbscripts / APIM_DDL, prefixed(API_PREFIXES), from_ddl(ctx, APIM_DDL))
    crash = (
        f"{AM_LOG}Error while running AM_DB post migration SQL scripts ",
        f"{AM_LOG}API Migration exception occurred while migrating",
    )
    converge(ctx, "api", [target], logger="V410Migration", crash_lines=crash)
    console.info("V410Migration", f"{AM_LOG}Successfully executed post migration DB scripts")
    console.info("V410Migration", f"{AM_LOG}Completed migration from 4.0.0 to 4.1.0...")


def _v420(ctx: Context, tenants: list[Tenant]) -> None:
    console = ctx.console
    for line in (DASHES, f"{AM_LOG}Starting migration from 4.1.0 to 4.2.0...", DASHES):
        console.info("V420Migration", line)
    console.info("V420Migration", f"{AM_LOG}ExtendedAPIMConfigService is disabled")
    console.info("V420Migration", f"{AM_LOG}Starting registry resource migration from 4.1.0 to 4.2.0")
    rxt = ctx.carbon_home / "migration-resources" / "rxts" / "api.rxt"
    console.info("RegistryResourceMigrator", f"{AM_LOG}Starting RXT migration using api.rxt at {rxt}")
    for tenant in tenants:
        console.info("RegistryResourceMigrator", f"{AM_LOG}Updating api.rxt of tenant {tenant.label}")
        console.info("RegistryResourceMigrator", f"{AM_LOG}Successfully updated api.rxt of tenant {tenant.label}")
    console.info("RegistryResourceMigrator", f"{AM_LOG}RXT resource migration done for all the tenants")
    artifacts = load_api_artifacts(ctx.config.shared_db)
    log = "V420RegistryResourceMigrator"
    console.info(log, f"{AM_LOG}Starting registry data migration for API Manager 4.2.0")
    for tenant in tenants:
        mine = [a for a in artifacts if a.tenant_id == tenant.id]
        console.info(log, f"{AM_LOG}Starting registry data migration for tenant {tenant.label}")
        console.info(log, f"Current Config of tenant {tenant.label}")
        console.info(log, f"{AM_LOG}Starting data migration of Self Signup Configuration for tenant {tenant.label}")
        console.info(log, f"{AM_LOG}Completed data migration of Self Signup Configuration for tenant {tenant.label}")
        console.info(log, f"{AM_LOG}Starting lifeCycle data migration for tenant {tenant.label}")
        console.info(log, f"{AM_LOG}Starting to convert the API LifeCycle XML to JSON")
        console.info(log, f"{AM_LOG}API LifeCycle XML to JSON Conversion Completed.")
        console.info(log, f"Artifacts Length: {len(mine)}")
        for api in mine:
            console.info(log, f"API_ID: {api.uuid} : API_OVERVIEW_STATUS: {api.status} lcState: {api.status.title()}")
        console.info(log, f"{AM_LOG}Completed registry data migration for tenant {tenant.label}")
        console.info(log, f"{AM_LOG}Completed lifeCycle data migration for tenant {tenant.label}")
        ctx.pause(0.05)
    console.info(log, f"{AM_LOG}API registry data migration done for all the tenants")
    console.info("V420Migration", f"{AM_LOG}Completed registry resource migration from 4.1.0 to 4.2.0")
    console.info("V420Migration", f"{AM_LOG}Completed migration from 4.1.0 to 4.2.0...")


def _reindex(ctx: Context) -> None:
    console, shared = ctx.console, database(ctx.config.shared_db)
    console.info("ArtifactReIndexingMigrator", f"{AM_LOG}Artifact re-indexing migrator started")
    ctx.pause(0.3)
    if ctx.failure.at("api", "errors"):
        console.error("ArtifactReIndexingMigrator", f"{AM_LOG}Error running the artifact re-indexing script")
    else:
        run_in_transaction(
            shared,
            "running the artifact re-indexing script",
            lambda cols: [(_REG_LOG_CLEANUP, None)] if "reg_log" in cols else [],
        )
    console.info("ArtifactReIndexingMigrator", f"{AM_LOG}Artifact re-indexing migrator completed")


def _pre_statements(columns: dict[str, set[str]]) -> list[Statement]:
    """Only what is still missing, so a rerun after a crash neither fails nor repeats."""
    statements: list[Statement] = []
    for table, old, new in _RENAMES:
        present = columns.get(table)
        if present is not None and old in present and new not in present:
            statements.append(
                (
                    sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                        sql.Identifier(table), sql.Identifier(old), sql.Identifier(new)
                    ),
                    None,
                )
            )
            present.discard(old)
            present.add(new)
    for table, column, kind, default in _NEW_COLUMNS:
        present = columns.get(table)
        if present is not None and column not in present:
            query = sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                sql.Identifier(table), sql.Identifier(column), sql.SQL(kind)
            )
            if default is not None:
                query = sql.SQL("{} DEFAULT {}").format(query, sql.Literal(default))
            statements.append((query, None))
            present.add(column)
    return statements


def _data_statements(columns: dict[str, set[str]], tenants: list[Tenant]) -> list[Statement]:
    """V410DBDataMigrator: organizations from tenant domains, version_comparable from creation time."""
    ids, domains = [t.id for t in tenants], [t.domain for t in tenants]
    tenant_map = sql.SQL("unnest(%s::integer[], %s::text[]) AS m(tenant_id, domain)")
    out: list[Statement] = []

    def has(table: str, *names: str) -> bool:
        return table in columns and all(n in columns[table] for n in names)

    if has("am_api", "organization", "api_provider"):
        out.append(
            (
                sql.SQL("UPDATE am_api SET organization = {} WHERE organization IS NULL").format(_PROVIDER_ORG),
                None,
            )
        )
    if has("am_api", "version_comparable", "created_time"):
        out.append(
            (
                sql.SQL(
                    "UPDATE am_api SET version_comparable = floor(extract(epoch FROM coalesce(created_time, "
                    "now())) * 1000)::bigint::text WHERE version_comparable IS NULL"
                ),
                None,
            )
        )
    if has("am_api_default_version", "organization", "api_provider"):
        out.append(
            (
                sql.SQL("UPDATE am_api_default_version SET organization = {} WHERE organization IS NULL").format(
                    _PROVIDER_ORG
                ),
                None,
            )
        )
    if has("am_application", "organization") and has("am_subscriber", "tenant_id"):
        out.append(
            (
                sql.SQL(
                    "UPDATE am_application a SET organization = m.domain FROM am_subscriber s, {} "
                    "WHERE a.subscriber_id = s.subscriber_id AND s.tenant_id = m.tenant_id "
                    "AND a.organization IS NULL"
                ).format(tenant_map),
                (ids, domains),
            )
        )
    if has("am_api_categories", "organization", "tenant_id"):
        out.append(
            (
                sql.SQL(
                    "UPDATE am_api_categories c SET organization = m.domain FROM {} "
                    "WHERE c.tenant_id = m.tenant_id AND c.organization IS NULL"
                ).format(tenant_map),
                (ids, domains),
            )
        )
    if has("am_gateway_environment", "organization", "tenant_domain"):
        out.append(
            (
                sql.SQL("UPDATE am_gateway_environment SET organization = tenant_domain WHERE organization IS NULL"),
                None,
            )
        )
    return out
