"""``-DrunPreMigration``: the API-M client's pre-migration validation, read-only.

Validates every API artifact in the shared DB registry the way the 4.x client's
APIValidator does: the API must exist in AM_API (apiAvailabilityValidation) and
its swagger.json must be a valid OpenAPI/Swagger document
(apiDefinitionValidation). Error items carry OASParserUtil's message
``Error while parsing OpenAPI definition`` and, as description, the
swagger-parser style message for what is wrong. Only read-only sessions are
opened, so the databases cannot change.
"""

from __future__ import annotations

import json
from typing import Any

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.postgres import db
from sandbox.distribution.registry import ApiArtifact, Tenant, guard, load_api_artifacts, load_tenants
from sandbox.distribution.runtime import Context, ServerExit

AM_LOG = "WSO2 API-M Migration Task : "
PARSE_ERROR = "Error while parsing OpenAPI definition"  # ExceptionCodes.OPENAPI_PARSE_EXCEPTION
STEPS = ("apiAvailabilityValidation", "apiDefinitionValidation")
KNOWN_STEPS = (
    *STEPS,
    "apiResourceLevelAuthSchemeValidation",
    "apiDeployedGatewayTypeValidation",
    "appThirdPartyKMValidation",
)
_AM_API_KEYS = "SELECT api_provider, api_name, api_version FROM am_api"


def run_pre_migration(ctx: Context) -> None:
    console = ctx.console
    requested = ctx.properties.get("runPreMigration", "")
    if ctx.failure.at("pre", "exit-early") or not ctx.config.has_database:
        console.error("APIMMigrationClient", f"{AM_LOG}Error occurred while initializing DB Util")
        if ctx.config.has_database:
            raise ServerExit(1)
        return
    try:
        if requested and requested not in KNOWN_STEPS:
            raise ApimUpgradeError(f"Unknown pre-migration validation step: {requested}")
        steps = [requested] if requested else list(STEPS)
        if requested:
            console.info("ValidationHandler", f"Running validator step : {requested} for tenants")
        else:
            console.info("ValidationHandler", "Running all validator steps.........")
        tenants = load_tenants(ctx.config.shared_db)
        artifacts = load_api_artifacts(ctx.config.shared_db)
        in_db = _am_api_keys(ctx) if "apiAvailabilityValidation" in steps else set()
        for tenant in tenants:
            _validate_tenant(ctx, tenant, [a for a in artifacts if a.tenant_id == tenant.id], steps, in_db)
        if ctx.failure.at("pre", "hang"):
            ctx.hang()
        if ctx.failure.at("pre", "errors") or ctx.failure.at("pre", "mid-migration"):
            console.error("APIMMigrationClient", f"{AM_LOG}Error while running the pre-migration validation")
            if ctx.failure.at("pre", "mid-migration"):
                raise ServerExit(1)  # a validation run has nothing to half-apply: it just dies
    except ApimUpgradeError as exc:
        console.error("APIMMigrationClient", f"{AM_LOG}Error while running the pre-migration validation")
        console.error("APIMMigrationClient", str(exc))


def validate_definition(text: bytes) -> list[str]:
    """Error descriptions for one swagger.json (empty when valid), as swagger-parser words them."""
    try:
        document = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return [f"Invalid UTF-8 in the definition: {exc.reason}"]
    except json.JSONDecodeError as exc:
        if exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string"):
            # A cut-off document: Jackson reports the end of input, not the character.
            end = exc.doc.rstrip()
            line, column = end.count("\n") + 1, len(end) - end.rfind("\n")
            return [
                "Unexpected end-of-input: expected close marker for Object (start marker at [Source: "
                f"(String); line: 1, column: 1]) at [Source: (String); line: {line}, column: {column}]"
            ]
        return [f"Unexpected character at [Source: (String); line: {exc.lineno}, column: {exc.colno}]: {exc.msg}"]
    if not isinstance(document, dict):
        return ["attribute  is not of type `object`"]
    errors = []
    if "openapi" not in document and "swagger" not in document:
        errors.append("attribute openapi is missing")
    errors += _object_attribute(document, "info", ("title", "version"))
    errors += _object_attribute(document, "paths", ())
    return errors


def _object_attribute(document: dict[str, Any], name: str, required: tuple[str, ...]) -> list[str]:
    if name not in document:
        return [f"attribute {name} is missing"]
    value = document[name]
    if not isinstance(value, dict):
        return [f"attribute {name} is not of type `object`"]
    return [f"attribute {name}.{key} is missing" for key in required if key not in value]


def _validate_tenant(
    ctx: Context, tenant: Tenant, apis: list[ApiArtifact], steps: list[str], in_db: set[tuple[str, str, str]]
) -> None:
    console = ctx.console
    for step in steps:
        console.info("ValidationHandler", f"Starting {step} for tenant {tenant.label}..........")
        if not apis:
            console.info("ValidationHandler", f"No API artifacts found in registry for tenant {tenant.label}")
        for api in apis:
            ident = f"{{name: {api.name}, version: {api.version}, provider: {api.provider}}}"
            if step == "apiAvailabilityValidation":
                console.info("APIValidator", f"Validating API availability in db for API {ident}")
                if (api.provider, api.name, api.version) not in in_db:
                    console.error("APIValidator", f"Unable to find the API {ident} in the database")
            elif step == "apiDefinitionValidation":
                _validate_definition(ctx, api, ident)
        console.info("ValidationHandler", f"Successfully completed {step} for tenant {tenant.label}..........")
        ctx.pause(0.05)


def _validate_definition(ctx: Context, api: ApiArtifact, ident: str) -> None:
    console = ctx.console
    described = f"{api.name} version: {api.version} type: {api.api_type}"
    console.info("APIValidator", f"Validating open API definition of API {ident}")
    if api.swagger is None:
        console.error(
            "APIValidator",
            f"Error while validating open API definition for {described}. Swagger definition of the API is missing...",
        )
        return
    errors = validate_definition(api.swagger)
    for description in errors:
        console.error(
            "APIValidator",
            f"OpenAPI Definition for API {ident} is invalid. "
            f"ErrorMessage: {PARSE_ERROR} ErrorDescription: {description}",
        )
    if not errors:
        console.info("APIValidator", f"Successfully validated open API definition of {described}")


def _am_api_keys(ctx: Context) -> set[tuple[str, str, str]]:
    source = ctx.config.apim_db
    assert source.server is not None and source.dbname is not None  # has_database checked
    with guard(source, "reading AM_API"), db.session(source.server, source.dbname, read_only=True) as conn:
        return {(str(p), str(n), str(v)) for p, n, v in db.fetch_all(conn, _AM_API_KEYS)}
