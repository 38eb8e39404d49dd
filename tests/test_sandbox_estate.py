"""Sandbox estate generator, against a real PostgreSQL.

The server comes from APIM_UPGRADE_TEST_PG_DSN (libpq DSN or URL) or defaults to
127.0.0.1:5432 as postgres. Every database made here has a random suffix and is dropped
by a fixture finaliser, even when a test fails.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from apim_upgrade.postgres.db import PgServer, execute, execute_script, fetch_all, fetch_one, session
from sandbox.errors import SandboxError
from sandbox.estate import EstateSummary, build_estate, drop_estate

COMPACT_APIM_TABLES = {
    "am_api", "am_api_default_version", "am_api_lc_event", "am_api_throttle_policy",
    "am_api_url_mapping", "am_application", "am_application_key_mapping",
    "am_deployment_revision_mapping", "am_key_manager", "am_policy_application",
    "am_policy_subscription", "am_revision", "am_subscriber", "am_subscription",
    "idn_oauth2_access_token", "idn_oauth2_access_token_scope", "idn_oauth_consumer_apps",
}  # fmt: skip
COMPACT_SHARED_TABLES = {
    "reg_content", "reg_log", "reg_path", "reg_property", "reg_resource",
    "reg_resource_property", "reg_resource_tag", "reg_tag", "um_domain", "um_hybrid_role",
    "um_hybrid_user_role", "um_role", "um_tenant", "um_user", "um_user_attribute",
    "um_user_role",
}  # fmt: skip
# Added by the upgrade (4.2.0 DDL); a 4.0.0 estate must not have them.
UPGRADE_REGISTRY_INDEXES = {
    "reg_resource_tag_ind_by_reg_tag_id",
    "reg_resource_property_ind_by_reg_prop_id",
}
API_ROOT = "/_system/governance/apimgt/applicationdata/provider/"
HERE = Path(__file__).resolve()
DBSCRIPTS_CANDIDATES = [
    Path(os.environ.get("APIM_UPGRADE_TEST_DBSCRIPTS", HERE.parents[2] / "shared/wso2/dbscripts/4.0.0")),
    Path("/work/shared/wso2/dbscripts/4.0.0"),
]
COMPACT_SQL = HERE.parents[1] / "sandbox" / "sql" / "compact" / "4.0.0"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(pg: PgServer) -> PgServer:
    """The session's real PostgreSQL (conftest: env DSN, 127.0.0.1:5432 or a throwaway cluster)."""
    return pg


def _names(prefix: str = "sbx") -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return f"{prefix}_{suffix}_apim", f"{prefix}_{suffix}_shared"


@pytest.fixture
def cleanup(server: PgServer) -> Iterator[Callable[..., None]]:
    """Register database names to drop when the test ends."""
    names: list[str] = []
    yield names.extend
    drop_estate(server, *names)


@pytest.fixture(scope="module")
def compact_estate(server: PgServer) -> Iterator[EstateSummary]:
    apim, shared = _names()
    try:
        yield build_estate(server, apim_db=apim, shared_db=shared, scale=1)
    finally:
        drop_estate(server, apim, shared)


@pytest.fixture(scope="module")
def dbscripts() -> Path:
    for candidate in DBSCRIPTS_CANDIDATES:
        if (candidate / "apimgt" / "postgresql.sql").is_file():
            return candidate
    pytest.skip(
        "genuine WSO2 4.0.0 dbscripts not found (looked in "
        + ", ".join(str(c) for c in DBSCRIPTS_CANDIDATES)
        + "); set APIM_UPGRADE_TEST_DBSCRIPTS to a pack's dbscripts/ folder"
    )


@pytest.fixture(scope="module")
def genuine_estate(server: PgServer, dbscripts: Path) -> Iterator[EstateSummary]:
    apim, shared = _names()
    try:
        yield build_estate(server, apim_db=apim, shared_db=shared, scale=1, dbscripts=dbscripts)
    finally:
        drop_estate(server, apim, shared)


# --------------------------------------------------------------------------- helpers


def _rows(server: PgServer, db: str, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    with session(server, db, read_only=True) as conn:
        return fetch_all(conn, query, params)


def _database_exists(server: PgServer, name: str) -> bool:
    return bool(_rows(server, "postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def _catalog(server: PgServer, db: str, tables: set[str]) -> dict[str, set[tuple[Any, ...]]]:
    """Columns, constraints and indexes of ``tables``, comparable across databases."""
    wanted = sorted(tables)
    return {
        "columns": set(_rows(server, db, """
            SELECT table_name, column_name, data_type, character_maximum_length, is_nullable,
                   column_default
            FROM information_schema.columns
            WHERE table_schema = 'public' AND table_name = ANY(%s)""", (wanted,))),
        "constraints": set(_rows(server, db, """
            SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid)
            FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
            WHERE n.nspname = 'public' AND c.conrelid::regclass::text = ANY(%s)""", (wanted,))),
        "indexes": set(_rows(server, db, """
            SELECT tablename, indexname, indexdef FROM pg_indexes
            WHERE schemaname = 'public' AND tablename = ANY(%s)""", (wanted,))),
    }  # fmt: skip


def _table_digests(server: PgServer, db: str) -> dict[str, str]:
    digests = {}
    with session(server, db, read_only=True) as conn:
        for (table,) in fetch_all(conn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"):
            query = sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} AS t").format(
                sql.Identifier("public", table)
            )
            row = fetch_one(conn, query)
            digests[table] = row[0] if row else ""
    return digests


def _is_openapi(text: str) -> bool:
    """The minimum an OpenAPI 3 / Swagger 2 document needs: version, info, paths object."""
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    if not isinstance(doc, dict):
        return False
    info = doc.get("info")
    return (
        isinstance(doc.get("openapi") or doc.get("swagger"), str)
        and isinstance(info, dict)
        and {"title", "version"} <= info.keys()
        and isinstance(doc.get("paths"), dict)
    )


def _swagger_by_api(server: PgServer, estate: EstateSummary) -> dict[tuple[str, str, str], str]:
    """(name, version, provider) -> swagger.json text, for every API in AM_API."""
    apis = _rows(server, estate.apim_db, "SELECT api_name, api_version, api_provider FROM am_api")
    files = dict(_rows(server, estate.shared_db, """
        SELECT p.reg_path_value, convert_from(c.reg_content_data, 'UTF8')
        FROM reg_resource r
        JOIN reg_path p ON p.reg_path_id = r.reg_path_id AND p.reg_tenant_id = r.reg_tenant_id
        JOIN reg_content c ON c.reg_content_id = r.reg_content_id
                          AND c.reg_tenant_id = r.reg_tenant_id
        WHERE r.reg_name = 'swagger.json'"""))  # fmt: skip
    found = {}
    for name, version, provider in apis:
        # The registry spells user@tenant as user-AT-tenant in paths.
        path = f"{API_ROOT}{provider.replace('@', '-AT-')}/{name}/{version}"
        assert path in files, f"no swagger.json for {name} {version} of {provider} at {path}"
        found[(name, version, provider)] = files[path]
    return found


# --------------------------------------------------------------------------- tests


def test_compact_estate_has_expected_tables_and_volume(compact_estate: EstateSummary) -> None:
    est = compact_estate
    assert est.schema_source == "compact"
    assert set(est.row_counts["apim"]) == COMPACT_APIM_TABLES
    assert set(est.row_counts["shared"]) == COMPACT_SHARED_TABLES
    empty = [t for part in est.row_counts.values() for t, n in part.items() if n == 0]
    assert not empty, f"tables left empty: {empty}"
    assert (est.apis, est.applications, est.oauth_apps, est.access_tokens) == (20, 50, 75, 10_000)
    assert est.tenants == 4 and est.row_counts["shared"]["um_tenant"] == 3
    assert est.users == est.row_counts["shared"]["um_user"] == 34
    assert 100 <= est.subscriptions <= 200
    assert est.access_tokens == est.row_counts["apim"]["idn_oauth2_access_token"]


def test_invalid_openapi_apis_are_listed_and_exist(server: PgServer, compact_estate: EstateSummary) -> None:
    invalid = compact_estate.invalid_openapi_apis
    assert len(invalid) >= 2
    assert len(invalid) <= max(2, compact_estate.apis // 20)
    apis = set(_rows(server, compact_estate.apim_db,
                     "SELECT api_name, api_version, api_provider FROM am_api"))  # fmt: skip
    assert set(invalid) <= apis


def test_registry_holds_one_swagger_per_api(server: PgServer, compact_estate: EstateSummary) -> None:
    swagger = _swagger_by_api(server, compact_estate)
    assert len(swagger) == compact_estate.apis
    invalid = set(compact_estate.invalid_openapi_apis)
    for api, text in swagger.items():
        if api in invalid:
            assert not _is_openapi(text), f"{api} should carry an invalid OpenAPI document"
        else:
            json.loads(text)  # raises if not JSON
            assert _is_openapi(text), f"{api} should carry a valid OpenAPI document"
    artifacts = _rows(server, compact_estate.shared_db, """
        SELECT count(*) FROM reg_resource
        WHERE reg_name = 'api' AND reg_media_type = 'application/vnd.wso2-api+xml'""")  # fmt: skip
    assert artifacts[0][0] == compact_estate.apis


def test_compact_schema_lacks_the_indexes_the_upgrade_adds(server: PgServer, compact_estate: EstateSummary) -> None:
    query = "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
    names = {row[0] for row in _rows(server, compact_estate.shared_db, query)}
    assert "reg_resource_tag_ind_by_path_id_and_resource_name" in names
    assert not names & UPGRADE_REGISTRY_INDEXES


def test_fill_leaves_the_compact_schema_as_defined(
    server: PgServer, compact_estate: EstateSummary, cleanup: Callable[..., None]
) -> None:
    """The bulk load drops and re-creates token indexes; the catalog must end up unchanged."""
    fresh_apim, fresh_shared = _names("sbxddl")
    cleanup([fresh_apim, fresh_shared])
    with session(server, "postgres", autocommit=True) as conn:
        for name in (fresh_apim, fresh_shared):
            execute(conn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    for name, script in ((fresh_apim, "apimgt/postgresql.sql"), (fresh_shared, "postgresql.sql")):
        with session(server, name, autocommit=True) as conn:
            execute_script(conn, (COMPACT_SQL / script).read_text(encoding="utf-8"))
    assert _catalog(server, compact_estate.apim_db, COMPACT_APIM_TABLES) == _catalog(
        server, fresh_apim, COMPACT_APIM_TABLES
    )
    assert _catalog(server, compact_estate.shared_db, COMPACT_SHARED_TABLES) == _catalog(
        server, fresh_shared, COMPACT_SHARED_TABLES
    )


def test_genuine_ddl_estate_builds_with_the_same_data(
    compact_estate: EstateSummary, genuine_estate: EstateSummary, dbscripts: Path
) -> None:
    est = genuine_estate
    assert est.schema_source == f"dbscripts:{dbscripts.resolve()}"
    assert len(est.row_counts["apim"]) == 176 and len(est.row_counts["shared"]) == 42
    for part, tables in (("apim", COMPACT_APIM_TABLES), ("shared", COMPACT_SHARED_TABLES)):
        for table in tables:
            assert est.row_counts[part][table] == compact_estate.row_counts[part][table], table
    assert est.invalid_openapi_apis == compact_estate.invalid_openapi_apis


def test_genuine_registry_holds_swagger_per_api(server: PgServer, genuine_estate: EstateSummary) -> None:
    swagger = _swagger_by_api(server, genuine_estate)
    invalid = set(genuine_estate.invalid_openapi_apis)
    assert {api for api, text in swagger.items() if not _is_openapi(text)} == invalid


def test_compact_schema_matches_the_genuine_ddl(
    server: PgServer, compact_estate: EstateSummary, genuine_estate: EstateSummary
) -> None:
    for tables, compact_db, genuine_db in (
        (COMPACT_APIM_TABLES, compact_estate.apim_db, genuine_estate.apim_db),
        (COMPACT_SHARED_TABLES, compact_estate.shared_db, genuine_estate.shared_db),
    ):
        compact = _catalog(server, compact_db, tables)
        genuine = _catalog(server, genuine_db, tables)
        for aspect in compact:
            assert compact[aspect] == genuine[aspect], (
                aspect,
                sorted(compact[aspect] - genuine[aspect]),
                sorted(genuine[aspect] - compact[aspect]),
            )


def test_same_scale_gives_identical_data(
    server: PgServer, compact_estate: EstateSummary, cleanup: Callable[..., None]
) -> None:
    apim, shared = _names()
    cleanup([apim, shared])
    again = build_estate(server, apim_db=apim, shared_db=shared, scale=1)
    assert again.invalid_openapi_apis == compact_estate.invalid_openapi_apis
    assert _table_digests(server, apim) == _table_digests(server, compact_estate.apim_db)
    assert _table_digests(server, shared) == _table_digests(server, compact_estate.shared_db)


def test_existing_database_is_refused(server: PgServer, cleanup: Callable[..., None]) -> None:
    apim, shared = _names()
    cleanup([apim, shared])
    with session(server, "postgres", autocommit=True) as conn:
        execute(conn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(shared)))
    with pytest.raises(SandboxError, match="already exists"):
        build_estate(server, apim_db=apim, shared_db=shared)
    assert not _database_exists(server, apim), "nothing may be created when a name is taken"


def test_quoted_names_and_owner_work(server: PgServer) -> None:
    suffix = uuid.uuid4().hex[:8]
    apim, shared = f'sb"; DROP DATABASE x; -- {suffix}', f"sb'shared {suffix}"
    role = f'sbx owner "{suffix}'
    with session(server, "postgres", autocommit=True) as conn:
        execute(conn, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        est = build_estate(server, apim_db=apim, shared_db=shared, owner=role)
        assert est.apim_db == apim and est.access_tokens == 10_000
        owners = _rows(server, "postgres", """
            SELECT datname, pg_get_userbyid(datdba) FROM pg_database
            WHERE datname = ANY(%s)""", ([apim, shared],))  # fmt: skip
        assert dict(owners) == {apim: role, shared: role}
        table_owners = _rows(server, apim, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        assert table_owners == [(role,)]
    finally:
        drop_estate(server, apim, shared)
        with session(server, "postgres", autocommit=True) as conn:
            execute(conn, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_dbscripts_folder_without_the_ddl_is_refused(
    server: PgServer, tmp_path: Path, cleanup: Callable[..., None]
) -> None:
    (tmp_path / "apimgt").mkdir()
    (tmp_path / "apimgt" / "postgresql.sql").write_text("SELECT 1;\n")
    apim, shared = _names()
    cleanup([apim, shared])
    with pytest.raises(SandboxError, match=str(tmp_path / "postgresql.sql")):
        build_estate(server, apim_db=apim, shared_db=shared, dbscripts=tmp_path)
    assert not _database_exists(server, apim)


def test_failed_schema_load_names_file_and_database_and_cleans_up(
    server: PgServer, tmp_path: Path, cleanup: Callable[..., None]
) -> None:
    (tmp_path / "apimgt").mkdir()
    broken = tmp_path / "apimgt" / "postgresql.sql"
    broken.write_text("CREATE TABLE am_api (api_id INTEGER,;\n")
    (tmp_path / "postgresql.sql").write_text("SELECT 1;\n")
    apim, shared = _names()
    cleanup([apim, shared])
    with pytest.raises(SandboxError) as caught:
        build_estate(server, apim_db=apim, shared_db=shared, dbscripts=tmp_path)
    assert str(broken) in str(caught.value) and apim in str(caught.value)
    assert not _database_exists(server, apim) and not _database_exists(server, shared)


@pytest.mark.parametrize("scale", [0, -1, True])
def test_bad_scale_is_refused(server: PgServer, scale: int) -> None:
    with pytest.raises(SandboxError, match="scale"):
        build_estate(server, apim_db="sbx_unused_a", shared_db="sbx_unused_b", scale=scale)
