"""sandbox.schema_sync against the real PostgreSQL: every WSO2 version step ends conformant."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from apim_upgrade.postgres import db
from apim_upgrade.postgres.schema_diff import (
    SchemaCatalog,
    diff_catalogs,
    read_catalog,
    reference_catalog,
    scratch_database,
)
from sandbox.errors import SandboxError
from sandbox.schema_sync import apply_sync, generate_upgrade_script, sync_statements
from tests.conftest import SHARED_WSO2

DBSCRIPTS = SHARED_WSO2 / "dbscripts"

pytestmark = pytest.mark.skipif(
    not (DBSCRIPTS / "4.0.0" / "apimgt" / "postgresql.sql").is_file(),
    reason=f"genuine WSO2 DDL not found under {DBSCRIPTS}",
)


def ddl(version: str, kind: str) -> Path:
    return (
        DBSCRIPTS / version / "apimgt" / "postgresql.sql"
        if kind == "apimgt"
        else DBSCRIPTS / version / "postgresql.sql"
    )


@pytest.fixture(scope="module")
def reference(pg: db.PgServer) -> Callable[[Path], SchemaCatalog]:
    """Reference catalogues, each DDL loaded once per module."""
    cache: dict[Path, SchemaCatalog] = {}

    def get(path: Path) -> SchemaCatalog:
        if path not in cache:
            cache[path] = reference_catalog(pg, path)
        return cache[path]

    return get


# Rows put into the older schema first, so every step also runs on tables with data:
# NOT NULL columns without default, renamed columns, surrogate primary keys added.
SEED = {
    ("apimgt", "4.0.0"): """
        INSERT INTO am_gateway_environment (uuid, name, tenant_domain) VALUES
            ('env-1', 'Default', 'carbon.super'), ('env-2', 'Default', 't1.com');
        INSERT INTO am_key_manager (uuid, name, type, tenant_domain) VALUES
            ('km-1', 'Resident Key Manager', 'default', 'carbon.super');
        INSERT INTO am_block_conditions (type, value, enabled, domain, uuid) VALUES
            ('IP', '10.0.0.1', 'true', 'carbon.super', 'bc-1');
        INSERT INTO am_subscriber (user_id, tenant_id, date_subscribed) VALUES ('admin', -1234, now());
        INSERT INTO am_application (name, subscriber_id) SELECT 'app', subscriber_id FROM am_subscriber;
        INSERT INTO am_application_attributes (application_id, name, value, tenant_id)
            SELECT application_id, 'color', 'blue', -1234 FROM am_application;
        INSERT INTO idn_fed_auth_session_mapping (idp_session_id, session_id, idp_name) VALUES
            ('idp-1', 's-1', 'google'), ('idp-2', 's-2', 'google'), ('idp-3', 's-3', 'github');
        INSERT INTO idn_oauth2_device_flow (code_id, device_code, user_code, last_poll_time, expiry_time)
            VALUES ('c-1', 'd-1', 'u-1', now(), now());
    """,
    ("apimgt", "4.3.0"): """
        INSERT INTO am_api (api_uuid, api_provider, api_name, api_version, context) VALUES
            ('api-1', 'admin', 'Pets', '1.0.0', '/pets');
        INSERT INTO am_api_client_certificate (tenant_id, alias, api_id, certificate)
            SELECT -1234, 'cert-1', api_id, 'x'::bytea FROM am_api;
        INSERT INTO am_service_catalog (uuid, service_key, md5, service_name, service_version, tenant_id,
            service_url, service_definition)
            VALUES ('svc-1', 'key-1', 'md5-1', 'svc', '1', -1234, 'http://svc', 'd'::bytea);
    """,
    ("shared", "4.0.0"): """
        INSERT INTO reg_path (reg_path_value, reg_tenant_id) VALUES ('/_system', 0);
        INSERT INTO reg_tag (reg_tag_name, reg_user_id, reg_tagged_time, reg_tenant_id) VALUES
            ('a', 'admin', now(), 0), ('b', 'admin', now(), 0);
        INSERT INTO reg_resource_tag (reg_tag_id, reg_path_id, reg_resource_name, reg_tenant_id)
            SELECT t.reg_id, p.reg_path_id, 'r', 0 FROM reg_tag t CROSS JOIN reg_path p;
    """,
}

# What the rows must look like afterwards (query, expected rows).
AFTER: dict[tuple[str, str], list[tuple[str, list[tuple[object, ...]]]]] = {
    ("apimgt", "4.0.0"): [
        (
            "SELECT uuid, organization, provider FROM am_gateway_environment ORDER BY uuid",
            [("env-1", "carbon.super", "wso2"), ("env-2", "t1.com", "wso2")],
        ),
        ("SELECT organization, token_type FROM am_key_manager", [("carbon.super", "DIRECT")]),
        ("SELECT block_condition FROM am_block_conditions", [("10.0.0.1",)]),
        ("SELECT app_attribute FROM am_application_attributes", [("blue",)]),
        ("SELECT count(DISTINCT id), count(*) FROM idn_fed_auth_session_mapping", [(3, 3)]),
        ("SELECT quantifier FROM idn_oauth2_device_flow", [(0,)]),
    ],
    ("apimgt", "4.3.0"): [
        ("SELECT alias, key_type FROM am_api_client_certificate", [("cert-1", "PRODUCTION")]),
        ("SELECT md5 FROM am_service_catalog", [("md5-1",)]),
    ],
    ("shared", "4.0.0"): [("SELECT count(DISTINCT id), count(*) FROM reg_resource_tag", [(2, 2)])],
}

PAIRS = [
    ("apimgt", "4.0.0", "4.2.0"),
    ("apimgt", "4.2.0", "4.3.0"),
    ("apimgt", "4.3.0", "4.4.0"),
    ("shared", "4.0.0", "4.2.0"),
    ("shared", "4.2.0", "4.4.0"),
]


@pytest.mark.parametrize(("kind", "old", "new"), PAIRS, ids=[f"{k}-{o}-{n}" for k, o, n in PAIRS])
def test_each_version_step_syncs_to_zero_differences(
    pg: db.PgServer, reference: Callable[[Path], SchemaCatalog], kind: str, old: str, new: str
) -> None:
    with scratch_database(pg, [ddl(old, kind)], prefix="t_sync") as live:
        if (kind, old) in SEED:
            with db.session(pg, live) as conn:
                db.execute_script(conn, SEED[kind, old])
        statements = sync_statements(pg, live, ddl(new, kind))
        seen: list[int] = []
        apply_sync(pg, live, statements, on_statement=lambda n, _s: seen.append(n))
        assert seen == list(range(1, len(statements) + 1))
        assert diff_catalogs(read_catalog(pg, live), reference(ddl(new, kind))) == []
        with db.session(pg, live, read_only=True) as conn:
            for query, rows in AFTER.get((kind, old), []):
                assert db.fetch_all(conn, query) == rows, query
    if (kind, old, new) == ("shared", "4.2.0", "4.4.0"):
        assert statements == []  # no schema change from shared 4.2.0 to 4.4.0 (diff-summary.json agrees)
    else:
        assert statements[0] == 'SET LOCAL search_path TO "public"'
        assert not any(s.upper().startswith("DROP TABLE") for s in statements)


ROWS_420 = """
    INSERT INTO am_gateway_environment (uuid, name, provider, organization) VALUES
        ('env-42', 'Synapse', 'wso2', 'carbon.super');
    INSERT INTO am_policy_application
        (name, tenant_id, quota_type, quota, quota_unit, unit_time, time_unit, uuid)
        VALUES ('Gold', -1234, 'requestCount', 10, 'REQ', 1, 'min', 'p-1');
    INSERT INTO am_api (api_uuid, api_provider, api_name, api_version, context) VALUES
        ('api-1', 'admin', 'Pets', '1.0.0', '/pets');
    INSERT INTO am_api_client_certificate (tenant_id, alias, api_id, certificate)
        SELECT -1234, 'cert-1', api_id, 'x'::bytea FROM am_api;
"""


@pytest.fixture(scope="module")
def upgrade_scripts(pg: db.PgServer, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("scripts")
    return [
        generate_upgrade_script(
            pg,
            ddl(a, "apimgt"),
            ddl(b, "apimgt"),
            out / f"upgrade-{a}-to-{b}.sql",
            title=f"API-M DB {a} to {b}",
        )
        for a, b in (("4.2.0", "4.3.0"), ("4.3.0", "4.4.0"))
    ]


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql (PostgreSQL client) is not installed")
@pytest.mark.parametrize("start", ["4.2.0", "4.0.0"])
def test_generated_scripts_chain_with_psql_to_440(
    pg: db.PgServer, reference: Callable[[Path], SchemaCatalog], upgrade_scripts: list[Path], start: str
) -> None:
    for script in upgrade_scripts:
        lines = script.read_text().splitlines()
        assert "STAND-IN" in lines[2]
        assert not any(line.startswith("\\") for line in lines), "no psql meta-commands"
        assert lines[-1].endswith(";")
    with scratch_database(pg, [ddl(start, "apimgt")], prefix="t_chain") as live:
        if start == "4.0.0":  # what the stand-in 4.2.0 server does first, on a DB with rows
            with db.session(pg, live) as conn:
                db.execute_script(conn, SEED["apimgt", "4.0.0"])
            apply_sync(pg, live, sync_statements(pg, live, ddl("4.2.0", "apimgt")))
        with db.session(pg, live) as conn:
            db.execute_script(conn, ROWS_420)
        for script in upgrade_scripts:
            _psql(pg, live, script)
        assert diff_catalogs(read_catalog(pg, live), reference(ddl("4.4.0", "apimgt"))) == []
        with db.session(pg, live, read_only=True) as conn:
            assert db.fetch_all(conn, "SELECT DISTINCT gateway_type FROM am_gateway_environment") == [("Regular",)]
            assert db.fetch_all(conn, "SELECT rate_limit_count FROM am_policy_application") == [(0,)]
            assert db.fetch_all(
                conn,
                "SELECT key_type, sub_validation FROM am_api_client_certificate JOIN am_api USING (api_id)",
            ) == [("PRODUCTION", "ENABLED")]
            if start == "4.0.0":
                assert db.fetch_all(conn, "SELECT app_attribute FROM am_application_attributes") == [("blue",)]


def test_failed_statement_applies_nothing(pg: db.PgServer) -> None:
    with scratch_database(pg, [], prefix="t_sync_fail") as live:
        statements = ["CREATE TABLE applied_first (a int)", "ALTER TABLE no_such_table ADD COLUMN b int"]
        with pytest.raises(SandboxError, match=r"statement 2 of 2 failed, so none was applied"):
            apply_sync(pg, live, statements)
        assert read_catalog(pg, live).tables == {}


def test_include_and_drop_tables(pg: db.PgServer, reference: Callable[[Path], SchemaCatalog]) -> None:
    shared_420, shared_400 = ddl("4.2.0", "shared"), ddl("4.0.0", "shared")
    with scratch_database(pg, [shared_400], prefix="t_sync_scope") as live:
        with db.session(pg, live) as conn:
            db.execute_script(conn, "CREATE TABLE zz_local (id serial PRIMARY KEY, note text)")
        only_reg = sync_statements(pg, live, shared_420, include=lambda t: t.startswith("reg_"))
        assert not any("um_" in s.lower() or "zz_local" in s for s in only_reg)
        kept = sync_statements(pg, live, shared_420)
        assert not any("zz_local" in s for s in kept), "extra tables and their sequences stay by default"
        dropped = sync_statements(pg, live, shared_420, drop_tables=True)
        assert dropped[-2:] == [
            'DROP TABLE IF EXISTS "public"."zz_local" CASCADE',
            'DROP SEQUENCE IF EXISTS "public"."zz_local_id_seq"',
        ]
        apply_sync(pg, live, only_reg)
        left = {d.table for d in diff_catalogs(read_catalog(pg, live), reference(shared_420))}
        assert left and all(not t.startswith("reg_") for t in left)


def _psql(pg: db.PgServer, dbname: str, script: Path) -> None:
    env = dict(os.environ)
    if pg.password is not None:
        env["PGPASSWORD"] = pg.password.get_secret_value()
    result = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-1",
            "-h",
            pg.host,
            "-p",
            str(pg.port),
            "-U",
            pg.user,
            "-d",
            dbname,
            "-f",
            str(script),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"psql failed on {script.name}:\n{result.stderr}"
