"""The sandbox's nodes log in as a role of their own, never as the maintenance user."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db
from sandbox.create import OWNER, SECRET_VARIABLES, destroy_sandbox, sandbox_secrets
from sandbox.roles import node_role_name, scram_sha256_verifier, verifies

ROLE_FACTS = """
SELECT a.rolcanlogin, a.rolsuper, a.rolcreaterole, a.rolpassword, r.rolconfig,
       pg_has_role(a.oid, %s, 'MEMBER')
FROM pg_authid a JOIN pg_roles r ON r.oid = a.oid WHERE a.rolname = %s
"""


def test_scram_verifier_round_trip() -> None:
    verifier = scram_sha256_verifier("pencil", b"0123456789abcdef")
    assert verifier.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert verifies("pencil", verifier) and not verifies("pencil!", verifier) and not verifies("pencil", "md5abc")


def test_nodes_have_their_own_role_and_password(make_sandbox: Callable[..., Path], pg: db.PgServer) -> None:
    plan_path = make_sandbox(jvm=True)
    plan = load_plan(plan_path)
    me, target_440 = plan.section("migration_environment"), plan.section("target_440")
    role = node_role_name(plan.name)
    assert me.db_username == target_440.db_username == role and role not in (pg.user, OWNER)
    assert me.db_password_env == target_440.db_password_env == SECRET_VARIABLES["db"]

    # sandbox.env holds that role's own password (the server's verifier proves it), not the maintenance user's.
    values = sandbox_secrets(plan_path.parent)
    password = values[SECRET_VARIABLES["db"]]
    with db.session(pg, "postgres", read_only=True) as conn:
        facts = db.fetch_one(conn, ROLE_FACTS, (OWNER, role))
    assert facts is not None, f"role {role} was not created"
    can_login, superuser, createrole, verifier, config, member = facts
    assert can_login and not superuser and not createrole and member
    assert verifies(password, str(verifier)), "sandbox.env does not hold the nodes' role's password"
    assert config == [f"role={OWNER}"]
    text = (plan_path.parent / "sandbox.env").read_text()
    assert "trust-auth-unused" not in text
    if pg.password is not None:
        assert pg.password.get_secret_value() not in text

    # The 4.0.0 node's file names the role and only a placeholder for its password (4.4.0's: configure-440).
    conf = tomllib.loads((target_440.old_home / "repository/conf/deployment.toml").read_text())
    for key in ("apim_db", "shared_db"):
        assert conf["database"][key]["username"] == role
        assert conf["database"][key]["password"] == f"$env{{{SECRET_VARIABLES['db']}}}"

    # A node's session: logged in as its role, acting as the owner (what it creates is owned like the schema).
    node = dataclasses.replace(pg, user=role, password=SecretStr(password))
    source = plan.databases.apim.source
    with db.session(node, source) as conn:
        assert db.fetch_one(conn, "SELECT session_user, current_user") == (role, OWNER)
        assert db.fetch_one(conn, "SELECT count(*) > 0 FROM am_api") == (True,)

    destroy_sandbox(plan_path)
    with db.session(pg, "postgres", read_only=True) as conn:
        assert db.fetch_one(conn, ROLE_FACTS, (OWNER, role)) is None, "destroy left the nodes' role behind"
