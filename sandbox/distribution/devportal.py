"""The stand-in control plane's writes: applications, keys, subscriptions (DevPortal REST API) and tokens.

What a live 4.x control plane writes all day, into the API-M DB (WSO2AM_DB) through its
connection pool, each request in one transaction that commits before the answer goes out
(an acknowledged write is a committed one):

- ``POST /api/am/devportal/v2/applications``: an AM_APPLICATION row (the caller becomes an
  AM_SUBSCRIBER on first use, as on a first DevPortal sign-in);
- ``POST /api/am/devportal/v2/applications/{id}/generate-keys``: an OAuth client
  (IDN_OAUTH_CONSUMER_APPS) and its AM_APPLICATION_KEY_MAPPING;
- ``POST /api/am/devportal/v2/subscriptions``: an AM_SUBSCRIPTION row;
- ``POST /oauth2/token`` (client_credentials, client id and secret in Basic auth): a new
  ACTIVE IDN_OAUTH2_ACCESS_TOKEN row (plus its IDN_OAUTH2_ACCESS_TOKEN_SCOPE); the
  app's previous ACTIVE token for the same scope becomes INACTIVE, as token renewal does.

Answers carry the product's field names (applicationId, subscriptionId, consumerKey, ...)
and its error bodies. Stand-in: no authentication (loopback only), the caller's user name
is the Basic auth user (default ``admin``); tokens are opaque UUIDs, not JWTs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import sql

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.postgres import db
from sandbox.distribution import pool
from sandbox.distribution.config import Datasource
from sandbox.distribution.registry import guard

SUPER_TENANT_ID, SUPER_TENANT_DOMAIN = -1234, "carbon.super"
TOKEN_VALIDITY_MS = 3_600_000

_SUBSCRIBER = "SELECT subscriber_id FROM am_subscriber WHERE user_id = %s AND tenant_id = %s"
_ADD_SUBSCRIBER = (
    "INSERT INTO am_subscriber (user_id, tenant_id, date_subscribed, created_by, created_time) "
    "VALUES (%s, %s, now(), %s, now()) ON CONFLICT DO NOTHING"
)
_HAS_COLUMN = (
    "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
    "AND table_name = %s AND column_name = %s"
)
_ADD_APPLICATION = (
    "INSERT INTO am_application (name, subscriber_id, application_tier, description, application_status, "
    "created_by, created_time, uuid, token_type{org}) VALUES (%s, %s, %s, %s, 'APPROVED', %s, now(), %s, 'JWT'{val}) "
    "RETURNING application_id"
)
_APPLICATION = "SELECT application_id, name FROM am_application WHERE uuid = %s"
# The tenant's column is tenant_domain in 4.0.0, organization since 4.1.0.
_KEY_MANAGER = "SELECT uuid FROM am_key_manager WHERE {} = %s ORDER BY (name = 'Resident Key Manager') DESC"
_ADD_CLIENT = (
    "INSERT INTO idn_oauth_consumer_apps (consumer_key, consumer_secret, username, tenant_id, user_domain, "
    "app_name, oauth_version, grant_types, app_state) "
    "VALUES (%s, %s, %s, %s, 'PRIMARY', %s, 'OAuth-2.0', 'client_credentials', 'ACTIVE')"
)
_ADD_KEY_MAPPING = (
    "INSERT INTO am_application_key_mapping (uuid, application_id, consumer_key, key_type, state, create_mode, "
    "key_manager) VALUES (%s, %s, %s, %s, 'COMPLETED', 'CREATED', %s)"
)
_API = "SELECT api_id FROM am_api WHERE api_uuid = %s"
_ADD_SUBSCRIPTION = (
    "INSERT INTO am_subscription (tier_id, api_id, application_id, sub_status, subs_create_state, "
    "created_by, created_time, uuid) VALUES (%s, %s, %s, 'UNBLOCKED', 'SUBSCRIBE', %s, now(), %s)"
)
_CLIENT = (
    "SELECT id, consumer_secret, username, tenant_id, app_state FROM idn_oauth_consumer_apps WHERE consumer_key = %s"
)
_RETIRE_TOKEN = (
    "UPDATE idn_oauth2_access_token SET token_state = 'INACTIVE', token_state_id = %s "
    "WHERE consumer_key_id = %s AND authz_user = %s AND tenant_id = %s AND user_domain = 'PRIMARY' "
    "AND token_scope_hash = %s AND token_state = 'ACTIVE' AND idp_id = -1 AND token_binding_ref = 'NONE'"
)
_ADD_TOKEN = (
    "INSERT INTO idn_oauth2_access_token (token_id, access_token, consumer_key_id, authz_user, tenant_id, "
    "user_domain, user_type, grant_type, time_created, validity_period, token_scope_hash, token_state, "
    "token_state_id, subject_identifier, access_token_hash, idp_id, token_binding_ref) "
    "VALUES (%s, %s, %s, %s, %s, 'PRIMARY', 'APPLICATION', 'client_credentials', now(), %s, %s, 'ACTIVE', "
    "'NONE', %s, %s, -1, 'NONE')"
)
_ADD_TOKEN_SCOPE = "INSERT INTO idn_oauth2_access_token_scope (token_id, token_scope, tenant_id) VALUES (%s, %s, %s)"


class RestError(Exception):
    """An error answer: HTTP status and the product's body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.status, self.body = status, body

    @classmethod
    def rest(cls, status: int, message: str, description: str) -> RestError:
        """The REST APIs' error body (ErrorDTO)."""
        return cls(status, {"code": status, "message": message, "description": description, "moreInfo": ""})

    @classmethod
    def oauth(cls, status: int, error: str, description: str) -> RestError:
        """The token endpoint's error body (RFC 6749 §5.2)."""
        return cls(status, {"error": error, "error_description": description})


@contextmanager
def _write(source: Datasource, what: str) -> Iterator[Any]:
    """A pooled connection in one transaction, committed when the block ends (before the answer)."""
    with guard(source, what), pool.borrowed(source) as conn, conn.transaction():
        yield conn


def _has_column(conn: Any, table: str, column: str) -> bool:
    """The schema differs by version (4.0.0 sources, 4.2.0/4.4.0 copies): ask it."""
    return db.fetch_one(conn, _HAS_COLUMN, (table, column)) is not None


def _subscriber_id(conn: Any, user: str) -> int:
    row = db.fetch_one(conn, _SUBSCRIBER, (user, SUPER_TENANT_ID))
    if row is None:
        db.execute(conn, _ADD_SUBSCRIBER, (user, SUPER_TENANT_ID, user))
        row = db.fetch_one(conn, _SUBSCRIBER, (user, SUPER_TENANT_ID))
    assert row is not None
    return int(row[0])


def create_application(source: Datasource, user: str, body: dict[str, Any]) -> dict[str, Any]:
    name = str(body.get("name") or "").strip()
    if not name:
        raise RestError.rest(400, "Bad Request", "Application name is required")
    tier = str(body.get("throttlingPolicy") or "Unlimited")
    app_uuid = str(uuid.uuid4())
    try:
        with _write(source, "creating an application") as conn:
            subscriber = _subscriber_id(conn, user)
            organization = _has_column(conn, "am_application", "organization")
            org, val = (", organization", ", %s") if organization else ("", "")
            query = _ADD_APPLICATION.format(org=org, val=val)
            params: tuple[Any, ...] = (name, subscriber, tier, body.get("description"), user, app_uuid)
            db.fetch_one(conn, query, params + ((SUPER_TENANT_DOMAIN,) if organization else ()))
    except ApimUpgradeError as exc:
        if "SQLSTATE 23505" in str(exc):
            duplicate = f"A duplicate application already exists by the name - {name}"
            raise RestError.rest(409, "Conflict", duplicate) from None
        raise
    return {
        "applicationId": app_uuid,
        "name": name,
        "throttlingPolicy": tier,
        "description": body.get("description"),
        "tokenType": "JWT",
        "status": "APPROVED",
        "owner": user,
    }


def generate_keys(source: Datasource, user: str, app_uuid: str, body: dict[str, Any]) -> dict[str, Any]:
    key_type = str(body.get("keyType") or "PRODUCTION").upper()
    if key_type not in ("PRODUCTION", "SANDBOX"):
        raise RestError.rest(400, "Bad Request", f"Invalid keyType {key_type}: use PRODUCTION or SANDBOX")
    consumer_key = secrets.token_urlsafe(21)[:28]
    consumer_secret = secrets.token_urlsafe(21)[:28]
    mapping = str(uuid.uuid4())
    try:
        with _write(source, "generating application keys") as conn:
            app = db.fetch_one(conn, _APPLICATION, (app_uuid,))
            if app is None:
                raise RestError.rest(404, "Not Found", f"Requested application with Id '{app_uuid}' not found")
            tenant_column = "organization" if _has_column(conn, "am_key_manager", "organization") else "tenant_domain"
            query = sql.SQL(_KEY_MANAGER).format(sql.Identifier(tenant_column))
            manager = db.fetch_one(conn, query, (SUPER_TENANT_DOMAIN,))
            client_name = f"{user}_{app[1]}_{key_type}"
            db.execute(conn, _ADD_CLIENT, (consumer_key, consumer_secret, user, SUPER_TENANT_ID, client_name))
            key_manager = str(manager[0]) if manager else "Resident Key Manager"
            db.execute(conn, _ADD_KEY_MAPPING, (mapping, app[0], consumer_key, key_type, key_manager))
    except ApimUpgradeError as exc:
        if "SQLSTATE 23505" in str(exc):
            raise RestError.rest(409, "Conflict", f"Keys are already generated for {key_type} of {app_uuid}") from None
        raise
    return {
        "keyMappingId": mapping,
        "keyManager": "Resident Key Manager",
        "keyType": key_type,
        "consumerKey": consumer_key,
        "consumerSecret": consumer_secret,
        "supportedGrantTypes": ["client_credentials"],
        "keyState": "COMPLETED",
    }


def subscribe(source: Datasource, user: str, body: dict[str, Any]) -> dict[str, Any]:
    app_uuid, api_uuid = str(body.get("applicationId") or ""), str(body.get("apiId") or "")
    tier = str(body.get("throttlingPolicy") or "Unlimited")
    sub_uuid = str(uuid.uuid4())
    with _write(source, "adding a subscription") as conn:
        app = db.fetch_one(conn, _APPLICATION, (app_uuid,))
        if app is None:
            raise RestError.rest(404, "Not Found", f"Requested application with Id '{app_uuid}' not found")
        api = db.fetch_one(conn, _API, (api_uuid,))
        if api is None:
            raise RestError.rest(404, "Not Found", f"Requested API with Id '{api_uuid}' not found")
        db.execute(conn, _ADD_SUBSCRIPTION, (tier, api[0], app[0], user, sub_uuid))
    return {
        "subscriptionId": sub_uuid,
        "applicationId": app_uuid,
        "apiId": api_uuid,
        "throttlingPolicy": tier,
        "status": "UNBLOCKED",
    }


def issue_token(source: Datasource, form: dict[str, str], client: tuple[str, str] | None) -> dict[str, Any]:
    """client_credentials grant: a new ACTIVE token row, committed before the answer."""
    if form.get("grant_type") != "client_credentials":
        raise RestError.oauth(400, "unsupported_grant_type", "Unsupported grant_type value")
    if client is None:
        raise RestError.oauth(401, "invalid_client", "Client Authentication failed.")
    consumer_key, consumer_secret = client
    scope = " ".join(sorted(form.get("scope", "default").split())) or "default"
    token_id, token = str(uuid.uuid4()), str(uuid.uuid4())
    with _write(source, "issuing an access token") as conn:
        row = db.fetch_one(conn, _CLIENT, (consumer_key,))
        if row is None or row[4] != "ACTIVE" or not hmac.compare_digest(str(row[1]), consumer_secret):
            raise RestError.oauth(
                401, "invalid_client", f"A valid OAuth client could not be found for client_id: {consumer_key}"
            )
        app_id, owner, tenant = int(row[0]), str(row[2]), int(row[3])
        scope_hash = hashlib.md5(scope.encode(), usedforsecurity=False).hexdigest()
        db.execute(conn, _RETIRE_TOKEN, (str(uuid.uuid4()), app_id, owner, tenant, scope_hash))
        token_hash = hashlib.sha256(token.encode()).hexdigest()
        params = (token_id, token, app_id, owner, tenant, TOKEN_VALIDITY_MS, scope_hash, owner, token_hash)
        db.execute(conn, _ADD_TOKEN, params)
        for item in scope.split():
            db.execute(conn, _ADD_TOKEN_SCOPE, (token_id, item, tenant))
    return {
        "access_token": token,
        "scope": scope,
        "token_type": "Bearer",
        "expires_in": TOKEN_VALIDITY_MS // 1000,
    }
