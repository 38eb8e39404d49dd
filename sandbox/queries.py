"""SQL only the sandbox sends: its stand-in roles (the product never creates roles)."""

from __future__ import annotations

from psycopg import sql

SANDBOX_ROLE_COMMENT = "apim-upgrade sandbox role"
ROLE_INFO = "SELECT rolcanlogin AND rolcreatedb, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s"


def create_role(name: str) -> sql.Composed:
    """The sandbox's stand-in for wso2_apim: owns the estate, and the stand-in JVM logs in as it.

    CREATEDB only because the stand-in server loads its pack's DDL into a scratch
    database to know the target schema; WSO2's own user needs no such right.
    """
    return sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(name))


def allow_login(name: str) -> sql.Composed:
    return sql.SQL("ALTER ROLE {} LOGIN CREATEDB").format(sql.Identifier(name))


def comment_on_role(name: str, comment: str) -> sql.Composed:
    return sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(name), sql.Literal(comment))
