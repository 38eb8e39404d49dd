"""Each preflight finding, against the real PostgreSQL; nothing is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from psycopg import sql

from apim_upgrade import preflight
from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db, queries
from commands.cli import main
from tests.conftest import unique


def _rewrite(plan_path: Path, old: str, new: str) -> Path:
    plan_path.write_text(plan_path.read_text().replace(old, new))
    return plan_path


def _errors(plan_path: Path, **kw: bool) -> dict[str, str]:
    report = preflight.run_preflight(load_plan(plan_path), **kw)
    return {f.check: f.message for f in report.errors}


def test_clean_sandbox_passes(make_sandbox: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    plan_path = make_sandbox()
    assert _errors(plan_path) == {}
    assert main(["plan", "check", str(plan_path)]) == 0
    out = capsys.readouterr().out
    assert "[ok] server version: PostgreSQL" in out and "preflight passed" in out


def test_unreachable_server(make_sandbox: Callable[..., Path]) -> None:
    plan_path = make_sandbox()
    _rewrite(plan_path, "port = ", "port = 1\nconnect_timeout = 2\n#")
    errors = _errors(plan_path)
    assert "connectivity" in errors and "[postgres]" in errors["connectivity"]


def test_missing_source_and_owner(make_sandbox: Callable[..., Path]) -> None:
    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    _rewrite(plan_path, f'source = "{plan.databases.apim.source}"', 'source = "no_such_db_here"')
    _rewrite(plan_path, 'owner = "wso2_apim"', 'owner = "no_such_role_here"')
    errors = _errors(plan_path)
    assert "'no_such_db_here' (databases.apim.source) does not exist" in errors["apim source"]
    assert "role 'no_such_role_here' (databases.apim.owner) does not exist" in errors["apim owner"]


def test_foreign_target_refused(make_sandbox: Callable[..., Path], pg: db.PgServer) -> None:
    plan_path = make_sandbox()
    target = load_plan(plan_path).databases.shared.target
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, queries.create_database_from_template(target, "template0", "postgres", None))
    errors = _errors(plan_path)
    assert "not made by apim-upgrade" in errors["shared target"]


def test_connected_sessions_listed_and_opt_in_terminate(make_sandbox: Callable[..., Path], pg: db.PgServer) -> None:
    plan_path = make_sandbox()
    _rewrite(plan_path, 'method = "auto"', 'method = "template"')
    source = load_plan(plan_path).databases.apim.source
    with db.session(pg, source, read_only=True) as conn:
        db.execute(conn, "SET application_name = 'wso2-control-plane-1'")
        errors = _errors(plan_path)
        assert "wso2-control-plane-1 from 127.0.0.1" in errors["sessions"]
        assert 'set method = "auto" under [copy]' in errors["sessions"]
        assert "terminate_connections = true under [copy]" in errors["sessions"]
        assert "sessions" not in _errors(plan_path, terminate_connections=True)


@pytest.mark.parametrize("method", ["auto", "snapshot"])
def test_sessions_are_expected_by_the_snapshot_copy(
    make_sandbox: Callable[..., Path], pg: db.PgServer, method: str
) -> None:
    """A live source is no error for the snapshot copy: reported as info, never a suggestion to terminate."""
    plan_path = make_sandbox()
    _rewrite(plan_path, 'method = "auto"', f'method = "{method}"')
    source = load_plan(plan_path).databases.apim.source
    with db.session(pg, source, read_only=True) as conn:
        db.execute(conn, "SET application_name = 'wso2-control-plane-1'")
        report = preflight.run_preflight(load_plan(plan_path))
    assert report.ok, report.errors
    sessions = [f for f in report.findings if f.check == "sessions"]
    assert [f.severity for f in sessions] == ["info"]
    assert "wso2-control-plane-1 from 127.0.0.1" in sessions[0].message
    assert "nobody is disconnected" in sessions[0].message and "terminat" not in sessions[0].message
    assert any(f.check == "copy tools" and f.severity == "ok" for f in report.findings)
    # Asked to terminate anyway: it is refused, in a warning, and nothing is listed for termination.
    warned = [f for f in preflight.run_preflight(load_plan(plan_path), terminate_connections=True).findings]
    assert any(f.severity == "warning" and "terminate_connections is ignored" in f.message for f in warned)


def test_role_without_createdb(make_sandbox: Callable[..., Path], pg: db.PgServer) -> None:
    plan_path = make_sandbox()
    role = unique("nocreatedb")
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        _rewrite(plan_path, 'user = "postgres"', f'user = "{role}"')
        errors = _errors(plan_path)
        assert "neither CREATEDB nor SUPERUSER" in errors["privileges"]
        assert "uuid-ossp" in errors["privileges"]
    finally:
        with db.session(pg, "postgres", autocommit=True) as conn:
            db.execute(conn, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_insufficient_disk(make_sandbox: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    plan_path = make_sandbox()
    # Pretend the copies need a million times their real size (the server stays real).
    monkeypatch.setattr(preflight, "DISK_HEADROOM", 10.0**12)
    errors = _errors(plan_path)
    assert "free space or use another tablespace" in errors["disk"]


def test_cli_plan_check_fails_with_one_line_per_problem(
    make_sandbox: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    _rewrite(plan_path, f'source = "{plan.databases.shared.source}"', 'source = "gone_db"')
    assert main(["plan", "check", str(plan_path)]) == 3
    captured = capsys.readouterr()
    assert "[error] shared source: database 'gone_db'" in captured.out
    assert "FAILED: preflight found problems" in captured.err
