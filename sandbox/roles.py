"""The sandbox's PostgreSQL roles: the estate's owner and the login role its nodes use.

As in a real estate, WSO2's servers never log in as the maintenance user: each sandbox
gets a login role of its own (``<prefix>_wso2_apim``) with its own random password, a
member of the owner role (``wso2_apim``) whose sessions act as that owner (``ALTER ROLE
... SET role``), so whatever a node creates is owned like the rest of the schema. The
password reaches the server only as a SCRAM-SHA-256 verifier, never in clear text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from apim_upgrade.postgres import db
from sandbox import queries as sandbox_queries
from sandbox.errors import SandboxError

SCRAM_ITERATIONS = 4096


def ensure_owner(server: db.PgServer, role: str) -> None:
    """Make sure the owner role exists with CREATEDB (the stand-in server loads DDL into scratch databases).

    A role this tool created (marked by its comment) is ours to change; any other role of
    that name is used as it is, and must already have CREATEDB.
    """
    with db.session(server, "postgres", autocommit=True) as conn:
        info = db.fetch_one(conn, sandbox_queries.OWNER_INFO, (role,))
        try:
            if info is None:
                db.execute(conn, sandbox_queries.create_owner(role))
                db.execute(conn, sandbox_queries.comment_on_role(role, sandbox_queries.SANDBOX_ROLE_COMMENT))
            elif not info[0] and info[1] == sandbox_queries.SANDBOX_ROLE_COMMENT:
                db.execute(conn, sandbox_queries.allow_createdb(role))
            elif not info[0]:
                raise SandboxError(
                    f"role {role} exists without CREATEDB, which the stand-in server needs for its scratch "
                    f"databases: ALTER ROLE {role} CREATEDB, or use a cluster without that role"
                )
        except db.PgError as exc:
            if exc.sqlstate != "42710":  # created concurrently by another sandbox
                raise SandboxError(f"cannot create role {role}: {db.describe_pg_error(exc)}") from None


def node_role_name(prefix: str) -> str:
    return f"{prefix}_wso2_apim"


def create_node_role(server: db.PgServer, name: str, owner: str) -> str:
    """Create the nodes' login role (member of ``owner``, acting as it); returns its new random password.

    A leftover role of that name made by the sandbox is given the new password; a role the
    sandbox did not make is refused.
    """
    password = secrets.token_urlsafe(18)
    verifier = scram_sha256_verifier(password)
    with db.session(server, "postgres", autocommit=True) as conn:
        info = db.fetch_one(conn, sandbox_queries.ROLE_COMMENT, (name,))
        if info is not None and info[0] != sandbox_queries.SANDBOX_NODE_ROLE_COMMENT:
            raise SandboxError(f"role {name} already exists and the sandbox did not make it; choose another --prefix")
        try:
            with conn.transaction():
                if info is None:
                    db.execute(conn, sandbox_queries.create_node_role(name, owner, verifier))
                    db.execute(conn, sandbox_queries.comment_on_role(name, sandbox_queries.SANDBOX_NODE_ROLE_COMMENT))
                else:
                    db.execute(conn, sandbox_queries.set_password(name, verifier))
                db.execute(conn, sandbox_queries.act_as(name, owner))
        except db.PgError as exc:
            raise SandboxError(
                f"cannot create the nodes' role {name} (the maintenance user needs CREATEROLE and the right to "
                f"grant {owner}): {db.describe_pg_error(exc)}"
            ) from None
    return password


def drop_node_role(server: db.PgServer, name: str) -> bool:
    """Drop the nodes' login role if the sandbox made it (after its databases are gone); True if dropped."""
    with db.session(server, "postgres", autocommit=True) as conn:
        info = db.fetch_one(conn, sandbox_queries.ROLE_COMMENT, (name,))
        if info is None or info[0] != sandbox_queries.SANDBOX_NODE_ROLE_COMMENT:
            return False
        db.execute(conn, sandbox_queries.drop_role(name))
    return True


def scram_sha256_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """What PostgreSQL stores for ``password`` (RFC 5802/7677), as ``PASSWORD`` accepts it pre-hashed."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def verifies(password: str, verifier: str) -> bool:
    """Does ``verifier`` (as pg_authid stores it) belong to ``password``?"""
    try:
        head, keys = verifier.split("$", 1)[1].split("$")
        iterations, salt = head.split(":")
        expected = scram_sha256_verifier(password, base64.b64decode(salt), int(iterations))
    except (ValueError, IndexError):  # not a SCRAM verifier (md5, none)
        return False
    return hmac.compare_digest(expected.rsplit("$", 1)[1], keys)
