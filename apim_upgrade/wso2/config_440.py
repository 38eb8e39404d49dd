"""The 4.4.0 configuration: the estate's own 4.0.0 deployment.toml mapped onto 4.4.0,
and its customisations carried over file by file.

Facts about what changed between the products' deployment.toml live in
``KEY_CHANGES``; a key 4.4.0 no longer knows is listed, never silently dropped.
"""

from __future__ import annotations

import copy
import filecmp
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apim_upgrade.plan import Plan
from apim_upgrade.plan.sections import Target440Section
from apim_upgrade.runtime.atomic import copy_atomically
from apim_upgrade.wso2.config_render import env, flatten, jdbc_url
from apim_upgrade.wso2.distribution import DistributionError

# Keys of a 4.0.0 deployment.toml that 4.4.0 no longer reads (from the products' default
# files, shared/wso2/conf/, and the 4.1.0 analytics rework): dotted path -> why.
KEY_CHANGES: dict[str, str] = {
    "apim.analytics.config_endpoint": "removed after 4.0.0: Choreo analytics is configured by auth_token alone",
}
# Per-gateway-environment keys 4.4.0's default adds, with the value 4.0.0 implied.
GATEWAY_DEFAULTS_440 = {"gateway_type": "Regular", "provider": "wso2"}
_SECRET_KEY = re.compile(r"(password|secret)$", re.I)


@dataclass(frozen=True)
class MappingResult:
    document: dict[str, Any]
    dropped: dict[str, str]  # key -> why 4.4.0 does not know it
    secrets_to_set: list[str]  # $env{} variables introduced for literal secrets of the 4.0.0 file
    re_indexing: tuple[int | None, int]  # (before, after)


def _delete(doc: dict[str, Any], dotted: str) -> bool:
    parts = dotted.split(".")
    node: Any = doc
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, dict) and node.pop(parts[-1], None) is not None


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Overlay wins, tables merge recursively, arrays of tables are replaced as a whole."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _placeholder_secrets(doc: Any, path: str, found: list[str]) -> Any:
    """Literal secrets of the old file become $env{} placeholders (values live on the nodes only)."""
    if isinstance(doc, dict):
        return {k: _placeholder_secrets(v, f"{path}.{k}" if path else k, found) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_placeholder_secrets(v, f"{path}_{i}", found) for i, v in enumerate(doc)]
    key = path.rsplit(".", 1)[-1]
    if _SECRET_KEY.search(key) and isinstance(doc, str) and doc and not doc.startswith(("$env{", "${")):
        name = "APIM440_" + re.sub(r"[^A-Za-z0-9]+", "_", path).upper()
        found.append(name)
        return env(name)
    return doc


def map_to_440(old: dict[str, Any], default_440: dict[str, Any], plan: Plan) -> MappingResult:
    """4.4.0 pack default, overlaid with the estate's 4.0.0 settings, pointed at the migrated copies."""
    target: Target440Section = plan.target_440  # type: ignore[assignment]
    estate = copy.deepcopy(old)
    dropped = {}
    for key, why in KEY_CHANGES.items():
        if key in flatten(estate) and _delete(estate, key):
            dropped[key] = why
    secrets: list[str] = []
    estate = _placeholder_secrets(estate, "", secrets)
    doc = _merge(default_440, estate)
    for gateway in doc.get("apim", {}).get("gateway", {}).get("environment", []):
        for key, value in GATEWAY_DEFAULTS_440.items():
            gateway.setdefault(key, value)
    host = target.jdbc_host or plan.postgres.host
    port = target.jdbc_port or plan.postgres.port
    for key, pair in (("apim_db", plan.databases.apim), ("shared_db", plan.databases.shared)):
        section = doc.setdefault("database", {}).setdefault(key, {})
        section.update(
            type="postgre",
            url=jdbc_url(host, port, pair.target),
            username=target.db_username,
            password=env(target.db_password_env),
            driver="org.postgresql.Driver",
        )
        section.setdefault("validationQuery", "SELECT 1")
    if target.server_offset is not None:  # a rehearsal's 4.4.0 beside production: its own ports
        doc.setdefault("server", {})["offset"] = target.server_offset
    before = old.get("indexing", {}).get("re_indexing")
    current = int(before) if isinstance(before, int) else 0
    doc.setdefault("indexing", {})["re_indexing"] = current + 1  # 4.4.0 re-indexes on its first start
    return MappingResult(doc, dropped, secrets, (before if isinstance(before, int) else None, current + 1))


def unknown_to_440(old: dict[str, Any], default_440: dict[str, Any]) -> list[str]:
    """Top-level tables of the estate's file that the 4.4.0 default does not have: worth a look."""
    return sorted(k for k in old if k not in default_440)


@dataclass(frozen=True)
class CarryOver:
    path: str
    outcome: str  # copied | skipped (identical) | conflicting | missing in 4.0.0
    detail: str = ""


def carry_over(old_home: Path, new_home: Path, items: list[str], policy: str) -> list[CarryOver]:
    """Bring each customisation over; a file that differs from the 4.4.0 pack's own is a conflict."""
    results: list[CarryOver] = []
    for item in items:
        source = old_home / item
        if not source.exists():
            results.append(CarryOver(item, "missing in 4.0.0", f"{source} does not exist"))
            continue
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for file in files:
            rel = str(file.relative_to(old_home))
            dest = new_home / rel
            if not dest.exists():
                copy_atomically(file, dest)
                results.append(CarryOver(rel, "copied"))
            elif filecmp.cmp(file, dest, shallow=False):
                results.append(CarryOver(rel, "skipped (identical)"))
            elif policy == "take-400":
                copy_atomically(file, dest)
                results.append(CarryOver(rel, "conflicting", "4.0.0 version taken (conflict_policy = take-400)"))
            else:
                detail = "4.4.0 version kept" if policy == "keep-440" else "differs from the 4.4.0 pack's file"
                results.append(CarryOver(rel, "conflicting", detail))
    return results


def check_homes(target: Target440Section) -> None:
    for label, home in (("home", target.home), ("old_home", target.old_home)):
        if not (home / "repository" / "conf" / "deployment.toml").is_file():
            raise DistributionError(
                f"target_440.{label} {home} has no repository/conf/deployment.toml; point it at a WSO2 API-M home"
            )
