"""The stand-in WSO2 API-M distribution: pack layout, startup checks, migrations, failure modes.

Servers run for real (bin/api-manager.sh -> python -m sandbox.distribution.server) in their
own process group, against copies (CREATE DATABASE ... TEMPLATE) of sandbox estates on the
real PostgreSQL; every group is killed and every database dropped by fixture finalisers.
APIM_STANDIN_SPEED=20 keeps the artificial pauses short.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from psycopg import sql

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db
from apim_upgrade.postgres.schema_diff import diff_catalogs, read_catalog, reference_catalog
from apim_upgrade.runtime.ports import free_port
from sandbox.distribution import MigrationKit, build_distribution, build_migration_kit, unpack_distribution

JAVA_HOME = str(Path(os.path.realpath(shutil.which("java") or "/usr/bin/java")).parents[1])
SECRET = "Sup3r-Secret-DB-Pa55"  # must never appear in console or log
SERVER_UP = r"StartupFinalizerServiceComponent WSO2 Carbon started in \d+ sec"
IDENTITY_DONE = r"MigrationClientImpl  WSO2 Product Migration Service Task : Execution was done through all"
API_DONE = r"WSO2 API-M Migration Task : Successfully completed API-M migration from 4\.0\.0 to 4\.2\.0"
FINDING = re.compile(
    r"\] ERROR - APIValidator OpenAPI Definition for API \{name: (?P<name>[^,]+), "
    r"version: (?P<version>[^,]+), provider: (?P<provider>[^}]+)\} is invalid\."
)
IDENTITY = (("idn_", "sp_", "cm_", "idp_", "fido", "wf_"), ("um_", "reg_"))
API = (("am_",), ())
IDENTITY_LINES = (
    "IdentityCoreServiceComponent Executing Migration client : org.wso2.carbon.is.migration.MigrationClientImpl",
    "MigrationClientImpl Migration Versions List.........................",
    "MigrationClientImpl  WSO2 Product Migration Service Task : Start Version : 5.11.0 to 6.0.0",
    "CarbonUIServiceComponent API Publisher Default Context : https://localhost:9443/publisher",
    "CarbonUIServiceComponent API Developer Portal Default Context : https://localhost:9443/devportal",
)
AM = "WSO2 API-M Migration Task : "
API_LINES = (
    f"APIMMigrationClient {AM}Starting API-M migration from 4.0.0 to 4.0.0",
    f"V410Migration {AM}Starting migration from 4.0.0 to 4.1.0...",
    f"V420Migration {AM}Starting migration from 4.1.0 to 4.2.0...",
    f"V420RegistryResourceMigrator {AM}Starting registry data migration for tenant -1234(carbon.super)",
    f"ArtifactReIndexingMigrator {AM}Artifact re-indexing migrator started",
    f"ArtifactReIndexingMigrator {AM}Artifact re-indexing migrator completed",
    f"APIMMigrationClient {AM}Successfully completed API-M migration from 4.0.0 to 4.2.0",
    "StartupFinalizerServiceComponent WSO2 Carbon started in",
)
IDENTITY_RUN = ("-Dmigrate", "-Dcomponent=identity")
API_RUN = ("-Dmigrate", "-DmigrateFromVersion=4.0.0", "-DmigratedVersion=4.2.0")


# --------------------------------------------------------------------------- helpers


class StandIn:
    """One api-manager.sh run in its own session; output collected line by line."""

    def __init__(self, home: Path, args: tuple[str, ...], env: dict[str, str]) -> None:
        self.home = home
        self.proc = subprocess.Popen(
            ["bash", str(home / "bin" / "api-manager.sh"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=home / "bin",
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<EOF>")
            self._changed.notify_all()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        regex, deadline = re.compile(pattern), time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if regex.search(line)), None)
                if found is not None:
                    return found
                if "<EOF>" in self.lines or time.monotonic() > deadline:
                    raise AssertionError(f"{pattern!r} never appeared; output:\n{self.text}")
                self._changed.wait(0.2)

    def wait_exit(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self.wait_for("<EOF>", 5)
        return code

    def terminate(self) -> int:
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.wait_exit(30)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.proc.wait(10)


@pytest.fixture
def launch() -> Iterator[Callable[..., StandIn]]:
    started: list[StandIn] = []

    def start(home: Path, *args: str, env: dict[str, str] | None = None) -> StandIn:
        server = StandIn(home, args, env or base_env())
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APIM_STANDIN_", "CARBON_"))}
    env.update(JAVA_HOME=JAVA_HOME, APIM_STANDIN_SPEED="20", KEYSTORE_TLS="wso2carbon", POSTGRES_PASSWORD=SECRET)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MigrationKit]:
    out = tmp_path_factory.mktemp("standin")
    return build_distribution("4.2.0", out), build_migration_kit(out / "kit")


def make_home(tmp_path: Path, built: tuple[Path, MigrationKit], *, postgres: bool = True) -> Path:
    """A 4.2.0 home prepared as the guide does: driver, estate keystores, PostgreSQL TOML."""
    zip_path, kit = built
    home = unpack_distribution(zip_path, tmp_path / f"home-{uuid.uuid4().hex[:6]}")
    if not postgres:
        return home
    shutil.copy(kit.jdbc_driver, home / "repository/components/lib")
    security = home / "repository/resources/security"
    for old in security.glob("*.jks"):
        old.unlink()
    for keystore in kit.keystores:
        shutil.copy(keystore, security)
    conf = tomllib.loads((home / "repository/conf/deployment.toml").read_text())
    for key, variable in (("apim_db", "DATABASE_URL_APIM"), ("shared_db", "DATABASE_URL_SHARED")):
        conf["database"][key] = {
            "type": "postgre",
            "url": f"jdbc:postgresql://$env{{{variable}}}",
            "username": "$env{DATABASE_USERNAME}",
            "password": "$env{POSTGRES_PASSWORD}",
            "driver": "org.postgresql.Driver",
            "validationQuery": "SELECT 1",
        }
    for section, name, alias in (
        ("tls", "tls-keystore.jks", "serverCert"),
        ("primary", "internal-keystore.jks", "encryptkey"),
    ):
        conf["keystore"][section] = {
            "file_name": name,
            "type": "JKS",
            "password": "$env{KEYSTORE_TLS}",
            "alias": alias,
        }
    write_toml(home, conf)
    return home


def write_toml(home: Path, conf: dict[str, Any]) -> None:
    (home / "repository/conf/deployment.toml").write_text(tomli_w.dumps(conf))


def install(home: Path, kit: MigrationKit, which: str) -> None:
    dropins = home / "repository/components/dropins"
    shutil.rmtree(home / "migration-resources", ignore_errors=True)
    for jar in dropins.glob("*.jar"):
        jar.unlink()
    resources, jar = (
        (kit.identity_resources, kit.identity_jar) if which == "identity" else (kit.api_resources, kit.api_jar)
    )
    shutil.copytree(resources, home / "migration-resources")
    shutil.copy(jar, dropins)


@dataclass(frozen=True)
class EstateCopy:
    apim: str  # copy of the estate's API-M DB
    shared: str  # copy of its shared DB
    env: dict[str, str]  # base_env() plus the variables the TOML's $env{} placeholders name
    estate: dict[str, Any]  # estate.json of the sandbox (EstateSummary)


@pytest.fixture
def estate_copy(pg: db.PgServer, make_sandbox: Callable[..., Path]) -> Iterator[EstateCopy]:
    """Copies of a fresh scale-1 sandbox estate (never the sources), dropped afterwards."""
    plan_path = make_sandbox(scale=1)
    plan = load_plan(plan_path)
    names = [f"sd_{uuid.uuid4().hex[:10]}", f"sd_{uuid.uuid4().hex[:10]}"]
    try:
        with db.session(pg, "postgres", autocommit=True) as conn:
            for name, source in zip(names, (plan.databases.apim.source, plan.databases.shared.source), strict=True):
                db.execute(
                    conn,
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(source)),
                )
        env = base_env(
            DATABASE_URL_APIM=f"{pg.host}:{pg.port}/{names[0]}?preparedStatementCacheQueries=0",
            DATABASE_URL_SHARED=f"{pg.host}:{pg.port}/{names[1]}",
            DATABASE_USERNAME=pg.user,
        )
        yield EstateCopy(names[0], names[1], env, json.loads((plan_path.parent / "estate.json").read_text()))
    finally:
        with db.session(pg, "postgres", autocommit=True) as conn:
            for name in names:
                db.execute(conn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def differences(
    pg: db.PgServer, home: Path, apim: str, shared: str, prefixes: tuple[tuple[str, ...], ...]
) -> list[str]:
    """Schema differences from the pack's dbscripts, for the tables a migration owns."""
    found = []
    for dbname, ddl, wanted in (
        (apim, "apimgt/postgresql.sql", prefixes[0]),
        (shared, "postgresql.sql", prefixes[1]),
    ):
        if not wanted:
            continue
        diffs = diff_catalogs(read_catalog(pg, dbname), reference_catalog(pg, home / "dbscripts" / ddl))
        found += [d.describe() for d in diffs if (d.table or d.name).startswith(wanted)]
    return found


_TABLE_HASH = "SELECT md5(coalesce(string_agg(md5(t::text), '' ORDER BY md5(t::text)), '')) FROM {} t"


def content_hash(pg: db.PgServer, dbname: str) -> dict[str, str]:
    """One digest per table over all its rows: any INSERT, UPDATE or DELETE changes it."""
    with db.session(pg, dbname, read_only=True) as conn:
        tables = [str(r[0]) for r in db.fetch_all(conn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {t: str(db.fetch_all(conn, sql.SQL(_TABLE_HASH).format(sql.Identifier(t)))[0][0]) for t in tables}


# --------------------------------------------------------------------------- pack layout


def test_pack_layout_versions_and_kit(tmp_path: Path, built: tuple[Path, MigrationKit]) -> None:
    for version, apimgt, kernel in (
        ("4.0.0", "9.0.174", "4.6.2"),
        ("4.2.0", "9.28.116", "4.8.1"),
        ("4.4.0", "9.30.67", "4.9.27"),
    ):
        zip_path = build_distribution(
            version, tmp_path, dbscripts=Path(__file__).parents[1] / "sandbox/sql/compact/4.0.0"
        )
        top = f"wso2am-{version}/"
        with zipfile.ZipFile(zip_path) as archive:
            names = set(archive.namelist())
            assert {n.split("/")[0] for n in names} == {top.rstrip("/")}
            for entry in ("bin/api-manager.sh", "bin/version.txt", "repository/conf/deployment.toml",
                          "repository/conf/log4j2.properties", "repository/components/lib/",
                          "repository/components/dropins/", "repository/logs/",
                          f"repository/components/plugins/org.wso2.carbon.apimgt.impl_{apimgt}.jar",
                          f"repository/components/plugins/org.wso2.carbon.core_{kernel}.jar",
                          "repository/resources/security/wso2carbon.jks",
                          "repository/resources/security/client-truststore.jks",
                          "dbscripts/apimgt/postgresql.sql", "dbscripts/postgresql.sql",
                          "README-STANDIN.md"):  # fmt: skip
                assert top + entry in names, entry
            assert not [n for n in names if n.startswith(top + "repository/components/lib/") and n.endswith(".jar")]
            assert (archive.getinfo(top + "bin/api-manager.sh").external_attr >> 16) & 0o111
            version_txt = archive.read(top + "bin/version.txt").decode()
            assert version_txt.splitlines()[0] == f"WSO2 API Manager v{version}" and "STAND-IN" in version_txt
            conf = tomllib.loads(archive.read(top + "repository/conf/deployment.toml").decode())
            assert (
                conf["database"]["apim_db"]["type"] == "h2" and conf["keystore"]["tls"]["file_name"] == "wso2carbon.jks"
            )
            assert [g["name"] for g in conf["apim"]["gateway"]["environment"]] == ["Default"]
            assert "%5p - %c{1} %m%n" in archive.read(top + "repository/conf/log4j2.properties").decode()
            assert archive.read(top + "repository/resources/security/wso2carbon.jks")[:4] == b"\xfe\xed\xfe\xed"
    kit = built[1]
    assert kit.identity_resources.name == kit.api_resources.name == "migration-resources"
    assert 'migrationEnable: "true"' in (kit.identity_resources / "migration-config.yaml").read_text()
    assert sorted(k.name for k in kit.keystores) == [
        "client-truststore.jks",
        "internal-keystore.jks",
        "tls-keystore.jks",
    ]
    assert all(k.read_bytes()[:4] == b"\xfe\xed\xfe\xed" for k in kit.keystores)
    with zipfile.ZipFile(kit.jdbc_driver) as jar:
        assert "PostgreSQL JDBC Driver" in jar.read("META-INF/MANIFEST.MF").decode()


def test_bare_start_serves_health_and_stops_on_sigterm(
    tmp_path: Path, built: Any, launch: Callable[..., StandIn]
) -> None:
    home = make_home(tmp_path, built, postgres=False)
    port = free_port()
    server = launch(home, env=base_env(APIM_STANDIN_HTTP_PORT=str(port)))
    server.wait_for(SERVER_UP, 30)
    assert server.lines[0] == f"JAVA_HOME environment variable is set to {JAVA_HOME}"
    assert re.match(
        r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]  INFO - CarbonCoreActivator Starting WSO2 Carbon\.\.\.$",
        server.lines[3],
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
        assert json.load(reply) == {
            "status": "ok",
            "version": "4.2.0",
            "carbon_home": str(home.resolve()),
            "pid": server.proc.pid,
            "databases": {"apim_db": None, "shared_db": None},
        }
    assert (home / "wso2carbon.pid").read_text().strip() == str(server.proc.pid)
    assert server.terminate() == 0
    for line in (
        "CarbonServerManager Shutdown hook triggered....",
        "INFO: Shutdown complete",
        "INFO: Halting JVM",
    ):
        assert line in server.text
    log = (home / "repository/logs/wso2carbon.log").read_text()
    assert "INFO {org.wso2.carbon.core.internal.StartupFinalizerServiceComponent} - WSO2 Carbon started in" in log


# --------------------------------------------------------------------------- refusals


def test_startup_refusals(tmp_path: Path, built: Any, launch: Callable[..., StandIn], pg: db.PgServer) -> None:
    env = base_env(
        DATABASE_URL_APIM=f"{pg.host}:{pg.port}/no_such_db_{uuid.uuid4().hex[:6]}",
        DATABASE_URL_SHARED=f"{pg.host}:{pg.port}/postgres",
        DATABASE_USERNAME=pg.user,
    )

    def refused(home: Path, expect: str, run_env: dict[str, str] = env) -> str:
        server = launch(home, env=run_env)
        assert server.wait_exit(30) != 0
        assert re.search(expect, server.text), server.text
        assert "WSO2 Carbon started in" not in server.text
        return server.text

    home = make_home(tmp_path, built)
    (home / "repository/conf/deployment.toml").write_text('[server]\nhostname = "localhost\n')
    refused(home, r"\] ERROR - ConfigParser Error while parsing TOML config file")

    home = make_home(tmp_path, built)
    conf = tomllib.loads((home / "repository/conf/deployment.toml").read_text())
    conf["keystore"]["tls"]["file_name"] = "keystore-tls.jks"  # the guide's name; the copied file differs
    write_toml(home, conf)
    refused(home, r"ERROR - CarbonCoreServiceComponent .*keystore-tls\.jks \(No such file or directory\)")

    home = make_home(tmp_path, built)
    (home / "repository/components/lib" / built[1].jdbc_driver.name).unlink()
    refused(home, r"ERROR - DataSourceRepository .*java\.lang\.ClassNotFoundException: org\.postgresql\.Driver")

    home = make_home(tmp_path, built)
    unset = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
    text = refused(home, r"placeholder \$env\{POSTGRES_PASSWORD\} in \[database\.apim_db\] password is not set", unset)
    assert SECRET not in text
    text = refused(home, r"ERROR - DataSourceRepository Error in creating data source WSO2AM_DB .*does not exist")
    assert SECRET not in text
    refused(home, r"^Error: JAVA_HOME is not defined correctly\.$|JAVA_HOME is not defined correctly",
            {k: v for k, v in env.items() if k != "JAVA_HOME"})  # fmt: skip


# --------------------------------------------------------------------------- migrations


def test_identity_then_api_migration_then_normal_start(
    tmp_path: Path, built: Any, launch: Callable[..., StandIn], estate_copy: EstateCopy, pg: db.PgServer
) -> None:
    apim, shared, env = estate_copy.apim, estate_copy.shared, estate_copy.env
    home = make_home(tmp_path, built)
    assert differences(pg, home, apim, shared, API), "the 4.0.0 copy should differ from the 4.2.0 DDL"
    assert differences(pg, home, apim, shared, IDENTITY), "... in identity tables too"

    install(home, built[1], "identity")
    started = time.monotonic()
    server = launch(home, *IDENTITY_RUN, env=env)
    server.wait_for(IDENTITY_DONE)
    server.wait_for(SERVER_UP)
    identity_seconds = time.monotonic() - started
    for line in IDENTITY_LINES:
        assert line in server.text
    time.sleep(0.5)
    assert server.proc.poll() is None, "the server keeps running after a -Dmigrate run"
    assert server.terminate() == 0 and "INFO: Halting JVM" in server.text
    assert " ERROR - " not in server.text
    assert differences(pg, home, apim, shared, IDENTITY) == []

    install(home, built[1], "api")
    server = launch(home, *API_RUN, env=env)
    server.wait_for(SERVER_UP)
    text = server.text
    assert " ERROR - " not in text
    order = API_LINES
    positions = [text.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert server.terminate() == 0
    assert differences(pg, home, apim, shared, API) == []
    assert differences(pg, home, apim, shared, IDENTITY) == []
    with db.session(pg, apim, read_only=True) as conn:
        rows = db.fetch_all(conn, "SELECT api_provider, organization, version_comparable FROM am_api")
        assert rows and all(org == (p.rsplit("@", 1)[1] if "@" in p else "carbon.super") and vc for p, org, vc in rows)
        assert db.fetch_one(conn, "SELECT count(*) FROM am_application WHERE organization IS NULL") == (0,)
        api_count = db.fetch_one(conn, "SELECT count(*) FROM am_api")
    with db.session(pg, shared, read_only=True) as conn:
        assert db.fetch_one(conn, "SELECT count(*) FROM reg_log WHERE reg_action = 7") == (0,)
    for output in (server.text, (home / "repository/logs/wso2carbon.log").read_text()):
        assert SECRET not in output
    assert identity_seconds < 20

    # A normal start on the migrated databases: publisher API reads AM_API live.
    shutil.rmtree(home / "migration-resources")
    port = free_port()
    server = launch(home, env={**env, "APIM_STANDIN_HTTP_PORT": str(port)})
    server.wait_for(SERVER_UP)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/am/publisher/v4/apis", timeout=10) as reply:
        body = json.load(reply)
    assert api_count is not None and body["count"] == api_count[0] == len(body["list"])
    assert {"id", "name", "version", "provider", "context"} <= set(body["list"][0])
    _live_writes(f"http://127.0.0.1:{port}", pg, apim, body["list"][0]["id"])


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _pool_sessions(pg: db.PgServer, dbname: str) -> set[int]:
    with db.session(pg, "postgres", read_only=True) as conn:
        query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'PostgreSQL JDBC Driver'"
        return {int(r[0]) for r in db.fetch_all(conn, query, (dbname,))}


def _live_writes(base: str, pg: db.PgServer, apim: str, api_id: str) -> None:
    """A running control plane's writes: committed before the answer, through its own pooled sessions."""
    pool = _pool_sessions(pg, apim)
    assert len(pool) == 10
    as_json = {"Content-Type": "application/json"}
    devportal = f"{base}/api/am/devportal/v2"
    status, app = _post(f"{devportal}/applications", json.dumps({"name": "probe-app"}).encode(), as_json)
    assert status == 201 and app["status"] == "APPROVED", app
    assert _post(f"{devportal}/applications", json.dumps({"name": "probe-app"}).encode(), as_json)[0] == 409
    keys_url = f"{devportal}/applications/{app['applicationId']}/generate-keys"
    status, keys = _post(keys_url, b'{"keyType": "PRODUCTION"}', as_json)
    assert status == 200 and keys["consumerKey"] and keys["consumerSecret"], keys
    assert _post(f"{devportal}/applications/{uuid.uuid4()}/generate-keys", b"{}", as_json)[0] == 404
    subscription = {"applicationId": app["applicationId"], "apiId": api_id}
    status, sub = _post(f"{devportal}/subscriptions", json.dumps(subscription).encode(), as_json)
    assert status == 201 and sub["status"] == "UNBLOCKED", sub
    missing = {"applicationId": app["applicationId"], "apiId": str(uuid.uuid4())}
    assert _post(f"{devportal}/subscriptions", json.dumps(missing).encode(), as_json)[0] == 404

    def token(secret: str, grant: str = "client_credentials") -> tuple[int, dict[str, Any]]:
        basic = base64.b64encode(f"{keys['consumerKey']}:{secret}".encode()).decode()
        form = {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"}
        return _post(f"{base}/oauth2/token", f"grant_type={grant}".encode(), form)

    status, refused = token("wrong")
    assert status == 401 and refused["error"] == "invalid_client", refused
    assert token(keys["consumerSecret"], "password")[1]["error"] == "unsupported_grant_type"
    (first_status, first), (_, second) = token(keys["consumerSecret"]), token(keys["consumerSecret"])
    assert first_status == 200 and first["token_type"] == "Bearer" and first["access_token"] != second["access_token"]
    with db.session(pg, apim, read_only=True) as conn:
        hashes = [hashlib.sha256(t["access_token"].encode()).hexdigest() for t in (first, second)]
        query = "SELECT access_token_hash, token_state FROM idn_oauth2_access_token WHERE access_token_hash = ANY(%s)"
        states = dict(db.fetch_all(conn, query, (hashes,)))
        subscribed = db.fetch_one(
            conn, "SELECT count(*) FROM am_subscription WHERE uuid = %s", (sub["subscriptionId"],)
        )
        organization = db.fetch_one(
            conn, "SELECT organization FROM am_application WHERE uuid = %s", (app["applicationId"],)
        )
    assert [states.get(h) for h in hashes] == ["INACTIVE", "ACTIVE"]  # the renewed token retired the first
    assert subscribed == (1,) and organization == ("carbon.super",)
    assert _pool_sessions(pg, apim) == pool  # the same sessions did all of it


def test_pre_migration_reports_invalid_apis_and_changes_nothing(
    tmp_path: Path, built: Any, launch: Callable[..., StandIn], estate_copy: EstateCopy, pg: db.PgServer
) -> None:
    apim, shared, env = estate_copy.apim, estate_copy.shared, estate_copy.env
    estate = estate_copy.estate
    expected = {tuple(api) for api in estate["invalid_openapi_apis"]}
    assert expected, "the sandbox always generates some invalid OpenAPI definitions"
    before = (content_hash(pg, apim), content_hash(pg, shared))
    home = make_home(tmp_path, built)
    install(home, built[1], "api")
    server = launch(home, *API_RUN, "-DrunPreMigration", env=env)
    server.wait_for(SERVER_UP)
    found = {(m["name"], m["version"], m["provider"]) for m in map(FINDING.search, server.lines) if m}
    assert found == expected
    assert server.text.count("INFO - APIValidator Validating open API definition of API {name: ") == estate["apis"]
    assert server.terminate() == 0
    assert (content_hash(pg, apim), content_hash(pg, shared)) == before


# --------------------------------------------------------------------------- failure injection


def test_failure_modes_and_rerun_convergence(
    tmp_path: Path, built: Any, launch: Callable[..., StandIn], estate_copy: EstateCopy, pg: db.PgServer
) -> None:
    apim, shared, env = estate_copy.apim, estate_copy.shared, estate_copy.env
    home = make_home(tmp_path, built)

    # exit-early: a few lines, an ERROR, exit 1 before server-up; FAIL_STEP limits it to its run.
    install(home, built[1], "identity")
    server = launch(home, *IDENTITY_RUN, env={**env, "APIM_STANDIN_FAIL": "exit-early"})
    assert server.wait_exit() == 1
    assert "ERROR - MigrationClientImpl Migration process was stopped." in server.text
    assert "WSO2 Carbon started in" not in server.text

    # mid-migration (identity): part committed, ERROR lines, exit 1; the rerun converges.
    server = launch(
        home,
        *IDENTITY_RUN,
        env={**env, "APIM_STANDIN_FAIL": "mid-migration", "APIM_STANDIN_FAIL_STEP": "identity"},
    )
    assert server.wait_exit() == 1 and " ERROR - MigrationClientImpl " in server.text
    server = launch(
        home, *IDENTITY_RUN, env={**env, "APIM_STANDIN_FAIL": "exit-early", "APIM_STANDIN_FAIL_STEP": "api"}
    )
    server.wait_for(SERVER_UP)
    assert " ERROR - " not in server.text and server.terminate() == 0
    assert differences(pg, home, apim, shared, IDENTITY) == []

    # hang: output stops before server-up and the process never exits by itself.
    install(home, built[1], "api")
    server = launch(home, *API_RUN, env={**env, "APIM_STANDIN_FAIL": "hang"})
    server.wait_for("Starting AM_DB data migration from 4.0.0 to 4.1.0")
    time.sleep(1.5)
    assert server.proc.poll() is None and "WSO2 Carbon started in" not in server.text
    server.kill()

    # mid-migration (API): some statements committed, then a crash; a rerun converges.
    server = launch(home, *API_RUN, env={**env, "APIM_STANDIN_FAIL": "mid-migration"})
    assert server.wait_exit() == 1
    assert f"ERROR - V410Migration {AM}Error while running AM_DB post migration SQL scripts" in server.text
    assert differences(pg, home, apim, shared, API), "a crashed migration leaves work to do"
    server = launch(home, *API_RUN, env=env)
    server.wait_for(API_DONE)
    server.wait_for(SERVER_UP)
    assert " ERROR - " not in server.text and server.terminate() == 0
    assert differences(pg, home, apim, shared, API) == []

    # errors: ERROR lines printed, server-up still reached.
    server = launch(home, *API_RUN, env={**env, "APIM_STANDIN_FAIL": "errors"})
    server.wait_for(SERVER_UP)
    assert f"ERROR - ArtifactReIndexingMigrator {AM}Error running the artifact re-indexing script" in server.text
    assert server.terminate() == 0

    # The API client without its migration-resources: ERROR lines, yet (as the real client)
    # the success line and server-up follow, so callers must count ERROR lines.
    shutil.rmtree(home / "migration-resources")
    server = launch(home, *API_RUN, env=env)
    server.wait_for(SERVER_UP)
    assert f"ERROR - APIMMigrationClient {AM}API Migration exception occurred while migrating" in server.text
    assert f"{AM}Error while running AM_DB pre migration SQL script at" in server.text
    assert re.search(API_DONE, server.text) and server.terminate() == 0

    # die-after-start: server-up, then exit 1 about a second (scaled) later.
    server = launch(
        home, env={**env, "APIM_STANDIN_FAIL": "die-after-start", "APIM_STANDIN_HTTP_PORT": str(free_port())}
    )
    server.wait_for(SERVER_UP)
    assert server.wait_exit(10) == 1

    # identity run without the client jar: WARN, the error, and no server-up (Carbon waits forever).
    install(home, built[1], "identity")
    (home / "repository/components/dropins" / built[1].identity_jar.name).unlink()
    server = launch(home, *IDENTITY_RUN, env=env)
    server.wait_for(r"WARN - IdentityCoreServiceComponent Waiting for migration client\.")
    server.wait_for(r"Migration client not found")
    time.sleep(1)
    assert server.proc.poll() is None and "WSO2 Carbon started in" not in server.text
