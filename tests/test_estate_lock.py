"""One writing command per estate: run, rehearse, rollback and sandbox destroy take the estate lock first."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from apim_upgrade.estate_lock import estate_lock
from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db
from tests.cli import run_cli


def _databases(pg: db.PgServer, prefix: str) -> set[str]:
    """This estate's databases (other tests may create their own meanwhile)."""
    with db.session(pg, "postgres", read_only=True) as conn:
        return {
            str(r[0]) for r in db.fetch_all(conn, "SELECT datname FROM pg_database") if str(r[0]).startswith(prefix)
        }


@pytest.mark.parametrize(
    "command",
    [
        ["run", "{plan}", "--phase", "prepare-databases"],
        ["rehearse", "{plan}", "--until", "prepare-databases"],
        ["sandbox", "destroy", "{plan}"],
    ],
    ids=["run", "rehearse", "sandbox-destroy"],
)
def test_a_second_writer_is_refused_naming_the_holder(
    make_sandbox: Callable[..., Path], pg: db.PgServer, command: list[str]
) -> None:
    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    prefix = plan.databases.apim.source.removesuffix("am_db")  # this sandbox's unique prefix
    before = _databases(pg, prefix)
    with estate_lock(plan, "run"):  # operator A's run, holding the estate
        out = run_cli(*[a.replace("{plan}", str(plan_path)) for a in command])
    assert out.returncode == 9, out.stdout + out.stderr
    failed = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1, out.stdout + out.stderr
    assert f"working on estate '{plan.name}'" in failed[0]
    assert f"pid {os.getpid()}" not in failed[0]  # the holder is A's database session, named by its backend
    assert f"'apim-upgrade {plan.name} run'" in failed[0]
    assert "Traceback" not in out.stderr
    assert _databases(pg, prefix) == before  # nothing was copied, dropped or created
    # Once A is done, the same command goes through.
    if command[0] == "run":
        done = run_cli(*[a.replace("{plan}", str(plan_path)) for a in command])
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_rehearsal_plan_shares_its_estate_lock() -> None:
    from apim_upgrade.estate_lock import lock_key

    assert lock_key("prod_rehearsal_20261202") == lock_key("prod") == "estate:prod"
    assert lock_key("prod2") != lock_key("prod")
