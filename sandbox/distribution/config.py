"""Reading ``repository/conf/deployment.toml`` as the product's config mapper does.

Only the parts the upgrade depends on are interpreted: ``[server]`` (hostname,
offset), ``[database.apim_db]`` / ``[database.shared_db]``, the keystores and
the truststore, and ``[indexing] re_indexing``. Every check fails the way the
product fails: one ERROR line naming the file, section or placeholder, never a
value.
"""

from __future__ import annotations

import os
import re
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from pydantic import SecretStr

from apim_upgrade.postgres.db import PgServer
from sandbox.errors import SandboxError

JKS_MAGIC = b"\xfe\xed\xfe\xed"
POSTGRES_DRIVER = "org.postgresql.Driver"
_ENV_PLACEHOLDER = re.compile(r"\$env\{([^}]*)\}")
_SECRET_KEY = re.compile(r"password|secret|token", re.IGNORECASE)
_JDBC_POSTGRES = re.compile(r"^jdbc:postgresql://(?P<host>[^/:?]+)(?::(?P<port>\d+))?/(?P<db>[^?]+)(?:\?(?P<q>.*))?$")
# Datasource names as the product prints them.
DATASOURCES = {"apim_db": "WSO2AM_DB", "shared_db": "WSO2_SHARED_DB"}


class StartupError(SandboxError):
    """The server refuses to start: ``logger`` and ``message`` form its ERROR line."""

    def __init__(self, logger: str, message: str) -> None:
        super().__init__(message)
        self.logger, self.message = logger, message

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.logger, self.message))


# WSO2's datasources use the Tomcat JDBC pool: initialSize connections open at startup (default 10).
POOL_INITIAL_SIZE = 10
POOL_MAX_ACTIVE = 100
# Test-only: the default initialSize when deployment.toml sets none. The suite runs many estates
# side by side on one PostgreSQL (max_connections 100 by default); each still holds a real pool.
POOL_INITIAL_SIZE_VARIABLE = "APIM_STANDIN_POOL_INITIAL_SIZE"


@dataclass(frozen=True)
class Datasource:
    key: str  # apim_db / shared_db
    name: str  # WSO2AM_DB / WSO2_SHARED_DB
    type: str  # "postgre", "h2", ...
    url: str  # query string dropped: it may carry credentials
    server: PgServer | None  # None for H2 (the stand-in then runs without a database)
    dbname: str | None
    pool_initial: int = POOL_INITIAL_SIZE  # [database.X.pool_options] initialSize, capped by maxActive


@dataclass(frozen=True)
class Keystore:
    section: str  # "keystore.tls", "truststore", ...
    file_name: str


@dataclass(frozen=True)
class ServerConfig:
    path: Path
    hostname: str
    offset: int
    apim_db: Datasource
    shared_db: Datasource
    keystores: tuple[Keystore, ...]
    re_indexing: int | None
    secrets: tuple[str, ...]  # resolved secret values, for the console to mask

    @property
    def has_database(self) -> bool:
        return self.apim_db.server is not None and self.shared_db.server is not None


def load_config(carbon_home: Path, environ: dict[str, str] | None = None) -> ServerConfig:
    """Parse, resolve ``$env{}`` placeholders and interpret deployment.toml."""
    path = carbon_home / "repository" / "conf" / "deployment.toml"
    env = dict(os.environ if environ is None else environ)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StartupError("ConfigParser", f"Configuration file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError("ConfigParser", f"Error while reading TOML config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib messages give position and expectation, never the offending value.
        raise StartupError("ConfigParser", f"Error while parsing TOML config file {path}: {exc}") from None
    secrets: list[str] = []
    resolved = _resolve(document, env, (), secrets)
    server = _table(resolved, "server")
    return ServerConfig(
        path=path,
        hostname=str(server.get("hostname", "localhost")),
        offset=_int(server.get("offset", 0), "[server] offset"),
        apim_db=_datasource(resolved, "apim_db"),
        shared_db=_datasource(resolved, "shared_db"),
        keystores=_keystores(resolved),
        re_indexing=_optional_int(_table(resolved, "indexing").get("re_indexing"), "[indexing] re_indexing"),
        secrets=tuple(secrets),
    )


def check_keystores(config: ServerConfig, carbon_home: Path) -> None:
    """Every keystore the TOML names must be in repository/resources/security/ and be a JKS."""
    security = carbon_home / "repository" / "resources" / "security"
    for keystore in config.keystores:
        path = security / keystore.file_name
        if not path.is_file():
            raise StartupError(
                "CarbonCoreServiceComponent",
                f"Cannot load the keystore of [{keystore.section}]: java.io.FileNotFoundException: "
                f"{path} (No such file or directory). Copy {keystore.file_name} into {security} "
                f"or fix file_name in [{keystore.section}] of deployment.toml",
            )
        with path.open("rb") as handle:
            if handle.read(4) != JKS_MAGIC:
                raise StartupError(
                    "CarbonCoreServiceComponent",
                    f"Cannot load the keystore of [{keystore.section}]: java.io.IOException: "
                    f"Invalid keystore format ({path} is not a JKS keystore)",
                )


def check_jdbc_drivers(config: ServerConfig, carbon_home: Path) -> None:
    """A ``postgre`` datasource needs a jar providing org.postgresql.Driver in components/lib."""
    lib = carbon_home / "repository" / "components" / "lib"
    for source in (config.apim_db, config.shared_db):
        if source.type == "postgre" and not _has_postgres_driver(lib):
            raise StartupError(
                "DataSourceRepository",
                f"Error in creating data source {source.name}: Cannot load JDBC driver class "
                f"'{POSTGRES_DRIVER}': java.lang.ClassNotFoundException: {POSTGRES_DRIVER} "
                f"(no PostgreSQL JDBC driver jar in {lib})",
            )


# --------------------------------------------------------------------------- helpers


def _resolve(value: Any, env: dict[str, str], where: tuple[str, ...], secrets: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, env, (*where, k), secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, env, where, secrets) for v in value]
    if not isinstance(value, str) or "$env{" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            section = ".".join(where[:-1]) or "(top level)"
            raise StartupError(
                "ConfigParser",
                f"Error while parsing TOML config file: environment variable '{name}' used by the "
                f"placeholder $env{{{name}}} in [{section}] {where[-1]} is not set",
            )
        resolved = env[name]
        if _SECRET_KEY.search(where[-1]):
            secrets.append(resolved)
        return resolved

    return _ENV_PLACEHOLDER.sub(substitute, value)


def _table(document: dict[str, Any], *path: str) -> dict[str, Any]:
    node: Any = document
    for part in path:
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StartupError("ConfigParser", f"{what} must be an integer") from None


def _optional_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _datasource(document: dict[str, Any], key: str) -> Datasource:
    name = DATASOURCES[key]
    section = _table(document, "database", key)
    kind = str(section.get("type", "h2"))
    url = str(section.get("url", ""))
    if kind == "h2":
        return Datasource(key, name, kind, url.split(";")[0], None, None)
    if kind != "postgre":
        raise StartupError(
            "DataSourceRepository",
            f'Error in creating data source {name}: type = "{kind}" in [database.{key}] is not '
            'supported by this stand-in distribution (use "postgre" or "h2")',
        )
    driver = str(section.get("driver", POSTGRES_DRIVER))
    if driver != POSTGRES_DRIVER:
        raise StartupError(
            "DataSourceRepository",
            f"Error in creating data source {name}: Cannot load JDBC driver class '{driver}': "
            f"java.lang.ClassNotFoundException: {driver}",
        )
    match = _JDBC_POSTGRES.match(url)
    if not match:
        raise StartupError(
            "DataSourceRepository",
            f"Error in creating data source {name}: invalid url in [database.{key}]: expected "
            "jdbc:postgresql://HOST[:PORT]/DATABASE[?OPTIONS]",
        )
    options = parse_qs(match.group("q") or "")
    sslmode = options.get("sslmode", [None])[0] or ("require" if options.get("ssl") == ["true"] else None)
    password = section.get("password")
    server = PgServer(
        host=match.group("host"),
        port=int(match.group("port") or 5432),
        user=str(section.get("username", "")),
        password=SecretStr(str(password)) if password not in (None, "") else None,
        sslmode=sslmode,
    )
    dbname = match.group("db")
    pool = section.get("pool_options", {})
    pool = pool if isinstance(pool, dict) else {}
    initial = _pool_size(pool, "initialSize", _default_initial_size(), name)
    initial = min(initial, _pool_size(pool, "maxActive", POOL_MAX_ACTIVE, name))
    return Datasource(key, name, kind, url.split("?")[0], server, dbname, initial)


def _default_initial_size() -> int:
    value = os.environ.get(POOL_INITIAL_SIZE_VARIABLE, "")
    return int(value) if value.isdigit() else POOL_INITIAL_SIZE


def _pool_size(pool: dict[str, Any], key: str, default: int, name: str) -> int:
    value = pool.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StartupError(
            "DataSourceRepository",
            f"Error in creating data source {name}: pool_options.{key} = {value!r} is not a count",
        )
    return value


def _keystores(document: dict[str, Any]) -> tuple[Keystore, ...]:
    """The product's defaults: tls and internal fall back to primary, primary to wso2carbon.jks."""
    primary = _table(document, "keystore", "primary").get("file_name", "wso2carbon.jks")
    names = {
        "keystore.primary": primary,
        "keystore.tls": _table(document, "keystore", "tls").get("file_name", primary),
        "keystore.internal": _table(document, "keystore", "internal").get("file_name", primary),
        "truststore": _table(document, "truststore").get("file_name", "client-truststore.jks"),
    }
    return tuple(Keystore(section, str(name).strip()) for section, name in names.items())


def _has_postgres_driver(lib: Path) -> bool:
    if not lib.is_dir():
        return False
    for jar in sorted(lib.glob("*.jar")):
        try:
            with zipfile.ZipFile(jar) as archive:
                names = set(archive.namelist())
                if "org/postgresql/Driver.class" in names:
                    return True
                service = "META-INF/services/java.sql.Driver"
                if service in names and POSTGRES_DRIVER in archive.read(service).decode("utf-8", "replace"):
                    return True
        except (OSError, zipfile.BadZipFile):
            continue  # the JVM's class loader skips unreadable jars too
    return False
