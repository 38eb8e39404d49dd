"""Rollback of a rehearsal whose copies are dropped: decided before any node is touched, recorded in the file."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from apim_upgrade.plan import Plan, load_plan
from apim_upgrade.proof import audit
from apim_upgrade.rehearsal import derive_rehearsal_plan
from apim_upgrade.wso2 import node_health, node_identity
from sandbox.create import sandbox_secrets

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def dropped_rehearsal(make_sandbox: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Plan:
    """A rehearsal plan of a sandbox estate whose copies do not exist (dropped, as a finished rehearsal leaves them)."""
    plan_path = make_sandbox(jvm=True)
    for name, value in sandbox_secrets(plan_path.parent).items():
        monkeypatch.setenv(name, value)
    return load_plan(derive_rehearsal_plan(load_plan(plan_path)))


@pytest.fixture
def squatter(dropped_rehearsal: Plan) -> Iterator[str]:
    """Some server answering the rehearsal's own 4.4.0 control plane URL (a node left running)."""
    assert dropped_rehearsal.cutover is not None
    url = urlsplit(dropped_rehearsal.cutover.control_plane_440[0].health_url)
    server = http.server.ThreadingHTTPServer((url.hostname or "127.0.0.1", url.port or 80), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield url.geturl()
    finally:
        server.shutdown()
        server.server_close()


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok", "version": "4.4.0"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


def _staging_400_down(plan: Plan) -> bool:
    assert plan.cutover is not None
    return not any(node_identity.identify(n).answering for n in plan.cutover.control_plane_400)


@pytest.mark.parametrize("confirm", [["--yes"], []], ids=["yes", "no-terminal"])
def test_nothing_to_roll_back_says_so_and_touches_no_node(
    dropped_rehearsal: Plan, confirm: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from commands.cli import main

    plan = dropped_rehearsal
    code = main(["rollback", str(plan.source_path), *confirm])  # no terminal here: nothing to confirm either
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"nothing to roll back: rehearsal '{plan.name}'"), out
    assert plan.databases.apim.target in lines[0] and "no node was stopped or started" in lines[0]
    assert _staging_400_down(plan)  # the staging 4.0.0 was not started
    records = audit.read_records(plan.audit_path)  # written where it can be: the file (the copy is gone)
    assert [(r.step, r.outcome) for r in records if r.phase == "rollback"] == [("decide_rollback", "skipped")]
    assert records[-1].details["decision"] == lines[0]
    assert not audit.verify_chain(plan.audit_path)


def test_a_node_left_running_is_refused_before_anything_acts(
    dropped_rehearsal: Plan, squatter: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from commands.cli import main

    plan = dropped_rehearsal
    assert main(["rollback", str(plan.source_path), "--yes"]) == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED: rehearsal '{plan.name}': its copies"), failed
    err = failed[0]
    assert squatter in err and "cp-440-rehearsal" in err and "rollback did nothing" in err
    assert node_health.http_check(squatter)[0]  # not stopped
    assert plan.cutover is not None  # the staging 4.0.0 shares the URL: it was not started in the squatter's place
    assert not node_identity.identify(plan.cutover.control_plane_400[0]).matches_plan
    steps = [(r.step, r.outcome) for r in audit.read_records(plan.audit_path) if r.phase == "rollback"]
    assert steps == [("decide_rollback", "failed")]  # refused at the first step: no node step ran
