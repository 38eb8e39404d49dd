"""Reads of the shared DB (WSO2_SHARED_DB) that the migration clients make: tenants and API artifacts.

API artifacts live in the governance registry, one folder per API version:
``/_system/governance/apimgt/applicationdata/provider/<provider>/<name>/<version>``
holding ``api`` (the RXT artifact, XML) and ``swagger.json`` (the OpenAPI document),
their bytes in REG_CONTENT (see sandbox/sql/fill_shared.sql).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from apim_upgrade.errors import DatabaseError
from apim_upgrade.postgres import db
from sandbox.distribution.config import Datasource

SUPER_TENANT = (-1234, "carbon.super")
API_ROOT = "/_system/governance/apimgt/applicationdata/provider/"

_TENANTS = "SELECT um_id, um_domain_name FROM um_tenant ORDER BY um_id"
_API_RESOURCES = """
SELECT r.reg_tenant_id, p.reg_path_value, r.reg_name, r.reg_uuid, c.reg_content_data
FROM reg_resource r
JOIN reg_path p ON p.reg_path_id = r.reg_path_id AND p.reg_tenant_id = r.reg_tenant_id
LEFT JOIN reg_content c ON c.reg_content_id = r.reg_content_id AND c.reg_tenant_id = r.reg_tenant_id
WHERE r.reg_name IN ('api', 'swagger.json') AND p.reg_path_value LIKE %s
ORDER BY r.reg_tenant_id, p.reg_path_value, r.reg_name
"""


@dataclass(frozen=True)
class Tenant:
    id: int
    domain: str

    @property
    def label(self) -> str:
        """How the migration client names a tenant: ``<id>(<domain>)``."""
        return f"{self.id}({self.domain})"


@dataclass(frozen=True)
class ApiArtifact:
    tenant_id: int
    path: str  # the API version folder
    uuid: str
    name: str
    version: str
    provider: str
    status: str
    api_type: str
    swagger: bytes | None  # None: no swagger.json resource (or no content) in the folder


def load_tenants(source: Datasource) -> list[Tenant]:
    """carbon.super first, then every UM_TENANT row by id (the order the clients loop in)."""
    with guard(source, "reading tenants"), _session(source) as conn:
        rows = db.fetch_all(conn, _TENANTS)
    return [Tenant(*SUPER_TENANT)] + [Tenant(int(i), str(d)) for i, d in rows]


def load_api_artifacts(source: Datasource) -> list[ApiArtifact]:
    with guard(source, "reading API artifacts from the registry"), _session(source) as conn:
        rows = db.fetch_all(conn, _API_RESOURCES, (API_ROOT + "%",))
    folders: dict[tuple[int, str], dict[str, tuple[str, bytes | None]]] = {}
    for tenant_id, path, name, uuid, content in rows:
        data = bytes(content) if content is not None else None
        folders.setdefault((int(tenant_id), str(path)), {})[str(name)] = (str(uuid or ""), data)
    artifacts = []
    for (tenant_id, path), files in folders.items():
        if "api" not in files:
            continue  # a swagger.json without its artifact is not an API to the client
        uuid, xml = files["api"]
        fields = _overview(xml or b"")
        swagger = files.get("swagger.json", ("", None))[1]
        artifacts.append(
            ApiArtifact(
                tenant_id=tenant_id,
                path=path,
                uuid=uuid,
                name=fields.get("name", path.rsplit("/", 2)[-2]),
                version=fields.get("version", path.rsplit("/", 1)[-1]),
                provider=fields.get("provider", path.rsplit("/", 3)[-3].replace("-AT-", "@")),
                status=fields.get("status", "CREATED"),
                api_type=fields.get("type", "HTTP"),
                swagger=swagger,
            )
        )
    return artifacts


@contextmanager
def guard(source: Datasource, what: str) -> Iterator[None]:
    """Driver errors become DatabaseError naming the datasource and what was being done."""
    try:
        yield
    except db.PgError as exc:
        raise DatabaseError(f"{what} in {source.name} failed: {db.describe_pg_error(exc)}") from None


@contextmanager
def _session(source: Datasource) -> Iterator[Any]:
    if source.server is None or source.dbname is None:
        raise DatabaseError(f"{source.name} is an embedded H2 database, which this stand-in cannot read")
    with db.session(source.server, source.dbname, read_only=True) as conn:
        yield conn


_OVERVIEW_FIELD = re.compile(r"<(provider|name|version|status|type)>([^<]*)</\1>")


def _overview(xml: bytes) -> dict[str, str]:
    """The <overview> fields of an API artifact (a fixed, flat layout: no XML parser needed)."""
    text = xml.decode("utf-8", "replace")
    start = text.find("<overview>")
    body = text[start : text.find("</overview>", start)] if start >= 0 else ""
    return {key: html.unescape(value) for key, value in _OVERVIEW_FIELD.findall(body)}
