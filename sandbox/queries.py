"""SQL only the sandbox sends: its stand-in roles (the product never creates roles)."""

from __future__ import annotations

from psycopg import sql

SANDBOX_ROLE_COMMENT = "apim-upgrade sandbox role"
SANDBOX_NODE_ROLE_COMMENT = "apim-upgrade sandbox node role"
OWNER_INFO = "SELECT rolcreatedb, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s"
ROLE_COMMENT = "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s"


def create_owner(name: str) -> sql.Composed:
    """The sandbox's stand-in for wso2_apim: owns the estate; its nodes' login roles act as it.

    CREATEDB only because the stand-in server loads its pack's DDL into a scratch
    database to know the target schema; WSO2's own user needs no such right.
    """
    return sql.SQL("CREATE ROLE {} NOLOGIN CREATEDB").format(sql.Identifier(name))


def allow_createdb(name: str) -> sql.Composed:
    return sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(name))


def create_node_role(name: str, owner: str, verifier: str) -> sql.Composed:
    """A login role for one sandbox's nodes, a member of the estate's owner (``verifier``: SCRAM, never clear text)."""
    return sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
        sql.Identifier(name), sql.Literal(verifier), sql.Identifier(owner)
    )


def set_password(name: str, verifier: str) -> sql.Composed:
    return sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(verifier))


def act_as(name: str, owner: str) -> sql.Composed:
    """Sessions of ``name`` act as ``owner`` from login on: what a node creates is owned like the schema."""
    return sql.SQL("ALTER ROLE {} SET role = {}").format(sql.Identifier(name), sql.Literal(owner))


def drop_role(name: str) -> sql.Composed:
    return sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name))


def comment_on_role(name: str, comment: str) -> sql.Composed:
    return sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(name), sql.Literal(comment))
