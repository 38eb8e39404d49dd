"""One failure, one exit code and one FAILED line, whichever command meets it; SIGTERM too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db
from tests.cli import failed_lines, run_cli
from tests.conftest import unique

ROOT = Path(__file__).resolve().parents[1]


def test_a_refused_login_is_exit_3_from_every_command(make_sandbox: Callable[..., Path]) -> None:
    plan_path = make_sandbox()
    # Trust auth accepts any password, so a role that does not exist stands in for a wrong one.
    role = unique("apim_ec_no_role")
    text = plan_path.read_text()
    plan_path.write_text(text.replace('user = "postgres"', f'user = "{role}"', 1))
    assert f'user = "{role}"' in plan_path.read_text()
    plan = str(plan_path)
    for command in (["plan", "check", plan], ["run", plan, "--phase", "prepare-databases"], ["rehearse", plan]):
        out = run_cli(*command)
        failed = failed_lines(out)
        assert out.returncode == 3, (command, out.stdout, out.stderr)
        assert len(failed) == 1 and f'role "{role}" does not exist' in failed[0], (command, failed)
        assert "Traceback" not in out.stderr
        assert "Starting temporary server" not in out.stderr, "it failed before Prefect started"


def test_a_missing_password_variable_is_exit_2_before_prefect_starts(make_sandbox: Callable[..., Path]) -> None:
    plan_path = make_sandbox()
    text = plan_path.read_text()
    plan_path.write_text(text.replace("[postgres]\n", '[postgres]\npassword_env = "APIM_EC_UNSET_PASSWORD"\n', 1))
    env = {k: v for k, v in os.environ.items() if k != "APIM_EC_UNSET_PASSWORD"}
    for command in (["rehearse"], ["run", "--phase", "prepare-databases"]):
        started = time.monotonic()
        out = run_cli(command[0], str(plan_path), *command[1:], env=env)
        assert out.returncode == 2, out.stdout + out.stderr
        assert failed_lines(out) == [
            "FAILED: environment variable APIM_EC_UNSET_PASSWORD (postgres.password_env) is not set; "
            "export it with the PostgreSQL password before running"
        ]
        assert time.monotonic() - started < 30  # no embedded Prefect API was started first


def test_sigterm_ends_with_one_failed_line_and_releases_the_estate(
    make_sandbox: Callable[..., Path], pg: db.PgServer
) -> None:
    plan_path = make_sandbox()
    proc = subprocess.Popen(
        [sys.executable, "-m", "commands.cli", "rehearse", str(plan_path), "--until", "prepare-databases"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the run holds its estate lock: it is working
            with db.session(pg, "postgres", read_only=True) as conn:
                held = db.fetch_one(
                    conn,
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (f"apim-upgrade {load_plan(plan_path).name} rehearsal",),
                )
            if held and held[0]:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the rehearsal never took its estate lock")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, out + err
    failed = [line for line in (out + err).splitlines() if line.startswith("FAILED:")]
    assert failed == ["FAILED: stopped by SIGTERM; rerun the same command to resume where it stopped"], out + err
    done = subprocess.run(
        [sys.executable, "-m", "commands.cli", "rehearse", str(plan_path), "--until", "prepare-databases"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr  # the lock was released; the rerun resumes
