"""The 4.2.0 migration environment and the JVM phases, end to end on the stand-in distribution."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import history
from apim_upgrade.postgres.schema_diff import diff_catalogs, read_catalog, reference_catalog
from apim_upgrade.proof import audit
from apim_upgrade.wso2.jvm import JvmRunFailed
from flows.phases import run_phase
from sandbox.create import sandbox_secrets
from tasks.jvm import PreMigrationFindings

pytestmark = pytest.mark.usefixtures("prefect_api")


def _rewrite(plan_path: Path, old: str, new: str) -> None:
    text = plan_path.read_text()
    assert old in text, old
    plan_path.write_text(text.replace(old, new))


def _processes_under(path: Path) -> list[int]:
    """PIDs whose command line mentions ``path`` (a leftover server would)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(path) in cmdline:
                pids.append(int(proc.name))
    return pids


def _invalid_apis(plan_path: Path) -> set[str]:
    estate = json.loads((plan_path.parent / "estate.json").read_text())
    return {f"{n}:{v}:{p}" for n, v, p in estate["invalid_openapi_apis"]}


def test_keystore_name_mismatch_caught_before_the_jvm(jvm_sandbox: Path) -> None:
    # The field guide's own TOML says keystore-tls.jks while it copies tls-keystore.jks.
    _rewrite(jvm_sandbox, 'file_name = "tls-keystore.jks"', 'file_name = "keystore-tls.jks"')
    plan = load_plan(jvm_sandbox)
    with pytest.raises(ApimUpgradeError) as err:
        run_phase("migration-environment", plan)
    assert "[keystore.tls] file_name = 'keystore-tls.jks'" in str(err.value)
    assert "tls-keystore.jks" in str(err.value)
    assert not (plan.work_dir / "logs").exists(), "no JVM may have started"


def test_full_chain_with_findings_gate_and_no_secrets(jvm_sandbox: Path, pg: object) -> None:
    plan = load_plan(jvm_sandbox)
    assert run_phase("migration-environment", plan).endswith("wso2am-4.2.0")
    conf = tomllib.loads((plan.work_dir / "migration-env/wso2am-4.2.0/repository/conf/deployment.toml").read_text())
    assert conf["database"]["apim_db"]["url"].endswith("/" + plan.databases.apim.target)
    assert conf["super_admin"]["password"] == "$env{APIM_SANDBOX_ADMIN_PASSWORD}"
    assert [e["name"] for e in conf["apim"]["gateway"]["environment"]] == ["internal", "external"]

    assert run_phase("identity-migration", plan) == "migrated"
    with pytest.raises(PreMigrationFindings) as err:
        run_phase("api-pre-migration", plan)
    invalid = _invalid_apis(jvm_sandbox)
    for api in invalid:
        assert f"{api}: " in str(err.value)  # name:version:provider, as the plan wants them
    # The exact line to paste into the plan.
    assert "accepted_invalid_apis = [" + ", ".join(f'"{a}"' for a in sorted(invalid)) + "]" in str(err.value)
    csv_text = (plan.work_dir / "reports" / "pre-migration-findings.csv").read_text()
    assert all(api.split(":")[0] in csv_text for api in invalid)

    # The operator accepts those APIs explicitly; the upgrade goes on.
    accepted = ", ".join(f'"{a}"' for a in sorted(invalid))
    _rewrite(jvm_sandbox, 'cleanup = "delete"', f'cleanup = "delete"\naccepted_invalid_apis = [{accepted}]')
    plan = load_plan(jvm_sandbox)
    assert "none blocking" in run_phase("api-pre-migration", plan)
    assert run_phase("api-migration", plan) == "migrated"
    assert run_phase("identity-migration", plan).startswith("skipped")  # resume: done on this copy

    # The API-M copy now has the 4.2.0 schema its pack ships, for the migrated tables.
    dbscripts = plan.work_dir / "migration-env/wso2am-4.2.0/dbscripts"
    for role, ddl in (
        ("apim", dbscripts / "apimgt/postgresql.sql"),
        ("shared", dbscripts / "postgresql.sql"),
    ):
        pair = plan.databases.roles()[role]
        differences = diff_catalogs(read_catalog(pg, pair.target), reference_catalog(pg, ddl))  # type: ignore[arg-type]
        assert [d for d in differences if d.kind != "table_extra"] == [], role
    assert history.completed(plan.server(), plan.databases.apim.target, "api-migration", "done")

    me = plan.migration_environment
    assert me is not None
    values = sandbox_secrets(jvm_sandbox.parent)
    secrets = [values[name] for name in me.secret_variables() if len(values[name]) > 6]
    assert run_phase("cleanup", plan).startswith("removed")
    assert not (plan.work_dir / "migration-env/wso2am-4.2.0").exists()
    for path in plan.work_dir.rglob("*"):
        if path.is_file() and path.suffix in {".log", ".jsonl", ".csv", ".json", ".toml", ".html"}:
            text = path.read_text(errors="replace")
            assert not any(s in text for s in secrets), f"a secret leaked into {path}"
    assert audit.verify_chain(plan.audit_path) == []


def test_hanging_jvm_is_killed_on_timeout(jvm_sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _rewrite(jvm_sandbox, "jvm_timeout_seconds = 300", "jvm_timeout_seconds = 8")
    plan = load_plan(jvm_sandbox)
    run_phase("migration-environment", plan)
    monkeypatch.setenv("APIM_STANDIN_FAIL", "hang")
    with pytest.raises(JvmRunFailed, match="did not reach its completion marker within 8 s"):
        run_phase("identity-migration", plan)
    assert _processes_under(plan.work_dir / "migration-env") == []
    records = audit.read_records(plan.audit_path)
    assert [r.outcome for r in records if r.step == "run_api_manager"] == ["failed"]


def test_genuine_400_estate_ends_as_a_true_440(
    make_sandbox: Callable[..., Path], genuine_dbscripts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole stand-in pipeline on WSO2's own 4.0.0 DDL conforms to WSO2's own 4.4.0 DDL."""
    plan_path = make_sandbox(jvm=True, dbscripts=genuine_dbscripts)
    for name, value in sandbox_secrets(plan_path.parent).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APIM_STANDIN_SPEED", "20")
    invalid = ", ".join(f'"{a}"' for a in sorted(_invalid_apis(plan_path)))
    _rewrite(plan_path, 'cleanup = "delete"', f'cleanup = "delete"\naccepted_invalid_apis = [{invalid}]')
    plan = load_plan(plan_path)
    for phase in (
        "prepare-databases",
        "migration-environment",
        "identity-migration",
        "api-pre-migration",
        "api-migration",
        "cleanup",
    ):
        run_phase(phase, plan)
    assert "conforms to 4.4.0" in run_phase("schema-upgrade", plan)
    records = audit.read_records(plan.audit_path)
    source_check = next(r for r in records if r.step == "check_conformance" and r.phase == "prepare-databases")
    assert source_check.details["differences"] == 0  # the generated estate is an unmodified 4.0.0
    final = [r for r in records if r.step == "check_conformance" and r.phase == "schema-upgrade"]
    assert final[-1].outcome == "succeeded" and final[-1].details["unaccepted"] == 0


def test_leftover_server_is_stopped_only_when_it_serves_that_home(tmp_path: Path) -> None:
    """What a rerun does with wso2carbon.pid: stop that home's server, never a stranger."""
    from apim_upgrade.wso2.jvm import PID_FILE, stop_leftover_server

    home = tmp_path / "wso2am-4.2.0"
    home.mkdir()
    # A server a crashed run left behind: its own session, its command line names the home.
    server = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "--carbon-home", str(home)], start_new_session=True
    )
    reaper = threading.Thread(target=server.wait, daemon=True)  # as init would: no zombie lingers
    reaper.start()
    try:
        (home / PID_FILE).write_text(f"{os.getpid()}\n")  # stale: the pid now belongs to another process
        assert stop_leftover_server(home) is None
        (home / PID_FILE).write_text("not a pid")
        assert stop_leftover_server(home) is None
        (home / PID_FILE).write_text(f"{server.pid}\n")
        stopped = stop_leftover_server(home, grace=5)
        assert stopped is not None and stopped["pid"] == server.pid
        reaper.join(5)
        assert server.returncode == -signal.SIGTERM
    finally:
        if server.poll() is None:
            server.kill()
