"""deployment.toml: rendered from data (tomllib in, tomli-w out), diffed, checked.

Secrets are written only as ``$env{NAME}`` placeholders; the values reach
the JVM through its environment and nothing else.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from apim_upgrade.plan import Plan
from apim_upgrade.plan.sections import KeystoreSection, MigrationEnvironmentSection
from apim_upgrade.redact import MASK
from apim_upgrade.runtime.atomic import write_atomically
from apim_upgrade.wso2.distribution import LIB_DIR, SECURITY_DIR, DistributionError

PLACEHOLDER = re.compile(r"\$env\{([A-Za-z_][A-Za-z0-9_]*)\}")
JDBC_URL = re.compile(r"^jdbc:postgresql://(?P<host>[^:/?]+)(?::(?P<port>\d+))?/(?P<db>[^?]+)")


def env(name: str) -> str:
    return "$env{" + name + "}"


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DistributionError(f"{path} cannot be read as TOML: {exc}; fix or replace the file") from None


def _keystore(ks: KeystoreSection) -> dict[str, Any]:
    out: dict[str, Any] = {"file_name": ks.file_name, "type": ks.type, "password": env(ks.password_env)}
    if ks.alias:
        out["alias"] = ks.alias
    out["key_password"] = env(ks.key_password_env or ks.password_env)
    return out


def jdbc_url(host: str, port: int, dbname: str) -> str:
    return f"jdbc:postgresql://{host}:{port}/{dbname}"


def render_migration_toml(default: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The 4.2.0 migration environment's deployment.toml: pack default + plan."""
    me: MigrationEnvironmentSection = plan.migration_environment  # type: ignore[assignment]
    doc = copy.deepcopy(default)
    doc["super_admin"] = {
        **doc.get("super_admin", {}),
        "username": me.admin_username,
        "password": env(me.admin_password_env),
    }
    keystore = doc.setdefault("keystore", {})
    keystore["tls"] = _keystore(me.keystore_tls)
    keystore["primary"] = _keystore(me.keystore_primary)
    if me.truststore is not None:
        doc["truststore"] = {
            "file_name": me.truststore.file_name,
            "type": me.truststore.type,
            "password": env(me.truststore.password_env),
        }
    host = me.jdbc_host or plan.postgres.host
    port = me.jdbc_port or plan.postgres.port
    database = doc.setdefault("database", {})
    for key, pair in (("apim_db", plan.databases.apim), ("shared_db", plan.databases.shared)):
        database[key] = {
            "type": "postgre",
            "url": jdbc_url(host, port, pair.target),
            "username": me.db_username,
            "password": env(me.db_password_env),
            "driver": "org.postgresql.Driver",
            "validationQuery": "SELECT 1",
            "pool_options": {
                "maxActive": me.pool_max_active,
                "maxWait": me.pool_max_wait,
                "minIdle": me.pool_min_idle,
            },
        }
    if me.gateway_environments:
        doc.setdefault("apim", {}).setdefault("gateway", {})["environment"] = [dict(e) for e in me.gateway_environments]
    return doc


def write_toml(doc: dict[str, Any], path: Path) -> Path:
    text = tomli_w.dumps(doc)
    tomllib.loads(text)  # what we write must read back
    return write_atomically(path, text)


# --- semantic diff ------------------------------------------------------------------------


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values; arrays of tables are indexed (``apim.gateway.environment[1].name``)."""
    out: dict[str, Any] = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(doc, list) and doc and all(isinstance(v, dict) for v in doc):
        for i, value in enumerate(doc):
            out.update(flatten(value, f"{prefix}[{i}]"))
    else:
        out[prefix] = doc
    return out


def mask_value(key: str, value: Any) -> Any:
    """Placeholders are shown (they are not secrets); literal secret values are masked."""
    secretish = any(s in key.lower() for s in ("password", "secret"))
    if secretish and isinstance(value, str) and value and not value.startswith(("$env{", "${")):
        return MASK
    return value


@dataclass(frozen=True)
class ConfigChange:
    key: str
    change: str  # added | removed | changed
    old: Any
    new: Any


def semantic_diff(old: dict[str, Any], new: dict[str, Any]) -> list[ConfigChange]:
    a, b = flatten(old), flatten(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        if key not in b:
            changes.append(ConfigChange(key, "removed", mask_value(key, a[key]), None))
        elif key not in a:
            changes.append(ConfigChange(key, "added", None, mask_value(key, b[key])))
        elif a[key] != b[key]:
            changes.append(ConfigChange(key, "changed", mask_value(key, a[key]), mask_value(key, b[key])))
    return changes


def masked_toml(doc: dict[str, Any]) -> str:
    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        return mask_value(key, value)

    return tomli_w.dumps(walk(doc))


# --- checking a rendered home before any JVM starts ---------------------------------------


def placeholders(doc: dict[str, Any]) -> set[str]:
    return {m for v in flatten(doc).values() if isinstance(v, str) for m in PLACEHOLDER.findall(v)}


def check_home(home: Path, doc: dict[str, Any], plan: Plan, available_env: set[str]) -> list[str]:
    """Everything that would make the JVM fail or touch the wrong database: one line each."""
    problems: list[str] = []
    security = home / SECURITY_DIR
    present = sorted(p.name for p in security.glob("*")) if security.is_dir() else []
    named: list[tuple[str, str]] = [
        (f"keystore.{k}", v["file_name"])
        for k, v in doc.get("keystore", {}).items()
        if isinstance(v, dict) and "file_name" in v
    ]
    if isinstance(doc.get("truststore"), dict) and "file_name" in doc["truststore"]:
        named.append(("truststore", doc["truststore"]["file_name"]))
    for section, file_name in named:
        if not (security / file_name).is_file():
            problems.append(
                f"[{section}] file_name = '{file_name}' but {SECURITY_DIR}/ holds only "
                f"{', '.join(present) or 'nothing'}; make the TOML name match the copied keystore "
                "(or copy the right file)"
            )
    databases = doc.get("database", {})
    if any(isinstance(d, dict) and d.get("type") == "postgre" for d in databases.values()):
        if not list((home / LIB_DIR).glob("postgresql*.jar")):
            problems.append(f"no PostgreSQL JDBC driver in {LIB_DIR}/; set migration_environment.jdbc_driver")
    sources = {p.source for p in plan.databases.roles().values()}
    for role, key in (("apim", "apim_db"), ("shared", "shared_db")):
        url = str(databases.get(key, {}).get("url", ""))
        match = JDBC_URL.match(url)
        expected = plan.databases.roles()[role].target
        if match is None:
            problems.append(f"[database.{key}] url '{url}' is not a jdbc:postgresql:// URL")
        elif match.group("db") in sources:
            problems.append(
                f"[database.{key}] points at the production source '{match.group('db')}'; "
                "the migration must only ever run on the copies"
            )
        elif match.group("db") != expected:
            problems.append(f"[database.{key}] points at '{match.group('db')}', not the copy '{expected}'")
    for name in sorted(placeholders(doc) - available_env):
        problems.append(f"$env{{{name}}} is used in deployment.toml but {name} is not set; export it")
    return problems
