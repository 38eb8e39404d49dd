"""Deployments for real: a `prefect server`, `prefect deploy`, a process worker, `prefect deployment run`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db, queries
from apim_upgrade.postgres.schema_runner import UpgradeLocked, advisory_lock
from apim_upgrade.rehearsal import rehearsal_suffix
from sandbox.prefect_server import free_port, start_prefect_server, stop_prefect_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    proc = start_prefect_server(home, port)
    try:
        yield dict(
            os.environ,
            PREFECT_HOME=str(home),
            PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
        )
    finally:
        stop_prefect_server(proc)


def _prefect(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_rehearsal_deployment_runs_on_a_process_worker(
    prefect_server: dict[str, str], make_sandbox: Callable[..., Path], pg: db.PgServer
) -> None:
    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    env = dict(prefect_server, APIM_UPGRADE_HOME=str(ROOT), APIM_UPGRADE_PLAN=str(plan_path))
    _prefect(env, "work-pool", "create", "apim-upgrade", "--type", "process")
    out = _prefect(env, "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    assert "upgrade-apim/rehearsal" in out and "upgrade-apim/cutover" in out
    out = _prefect(env, "deployment", "run", "upgrade-apim/rehearsal", "--param", "until_phase=prepare-databases")
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert run_id, out
    suffix = rehearsal_suffix(datetime.now(UTC))
    try:
        _prefect(env, "worker", "start", "--pool", "apim-upgrade", "--run-once", timeout=600)
        state = _prefect(env, "flow-run", "inspect", run_id.group(1))
        assert "COMPLETED" in state.upper(), state
        with db.session(pg, "postgres", read_only=True) as conn:
            names = {r[0] for r in db.fetch_all(conn, "SELECT datname FROM pg_database")}
        for pair in plan.databases.roles().values():
            assert f"{pair.target}{suffix}" in names  # the rehearsal worked on dated copies
            assert pair.target not in names  # and never on the plan's own targets
        trail = plan.work_dir / suffix.lstrip("_") / "work" / "audit.jsonl"
        steps = [json.loads(line)["step"] for line in trail.read_text().splitlines()]
        assert "validate_copy" in steps
    finally:
        with db.session(pg, "postgres", autocommit=True) as conn:
            for pair in plan.databases.roles().values():
                db.execute(conn, queries.drop_database(f"{pair.target}{suffix}"))


@pytest.mark.usefixtures("prefect_api")
def test_second_run_on_the_same_estate_is_refused(make_sandbox: Callable[..., Path], pg: db.PgServer) -> None:
    from flows.upgrade_apim import upgrade_apim

    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    with advisory_lock(pg, "postgres", f"estate:{plan.name}", "cutover-by-bob", "test"):
        with pytest.raises(UpgradeLocked, match="'cutover-by-bob'"):
            upgrade_apim(plan=str(plan_path), mode="rehearsal", until_phase="prepare-databases")


def _failing_plan(tmp_path: Path) -> Path:
    """A plan whose run fails in preflight, before anything is written: its 4.4.0 dbscripts folder is missing."""
    (tmp_path / "step.sql").write_text("SELECT 1;\n")
    plan_path = tmp_path / "failing.toml"
    plan_path.write_text(
        'name = "failing-estate"\nwork_dir = "work"\n'
        '[databases.apim]\nsource = "src_am"\ntarget = "tgt_am"\nowner = "wso2"\n'
        '[databases.shared]\nsource = "src_shared"\ntarget = "tgt_shared"\nowner = "wso2"\n'
        '[schema_upgrade]\ntarget_dbscripts = "missing-dbscripts"\n'
        '[[schema_upgrade.scripts]]\nfrom_version = "4.2.0"\nto_version = "4.3.0"\npath = "step.sql"\n'
    )
    return plan_path


def test_a_failed_deployment_run_logs_one_failed_line_and_no_traceback(
    prefect_server: dict[str, str], tmp_path: Path
) -> None:
    plan_path = _failing_plan(tmp_path)
    env = dict(prefect_server, APIM_UPGRADE_HOME=str(ROOT), APIM_UPGRADE_PLAN=str(plan_path))
    _prefect(env, "work-pool", "create", "apim-upgrade", "--type", "process", "--overwrite")
    _prefect(env, "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    out = _prefect(env, "deployment", "run", "upgrade-apim/cutover", "--param", f"plan={plan_path}")
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert run_id, out
    worker_log = _prefect(env, "worker", "start", "--pool", "apim-upgrade", "--run-once", timeout=300)
    state = _prefect(env, "flow-run", "inspect", run_id.group(1))
    assert "FAILED" in state.upper(), state
    run_log = _prefect(env, "flow-run", "logs", run_id.group(1))
    for log in (worker_log, run_log):
        failed = [line for line in log.splitlines() if "FAILED: " in line]
        assert len(failed) == 1, log
        assert "ERROR" in failed[0] and "preflight found problems: dbscripts:" in failed[0], failed[0]
        assert "Traceback" not in log, log
