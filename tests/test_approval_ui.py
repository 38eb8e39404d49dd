"""The cutover's approval, answered as an operator does: in the Prefect UI, in a browser.

A real `prefect server`, the deployments of deployments/prefect.yaml, a process worker and
headless Chromium driven by Playwright (the system's Chromium, no browser download). One
end-to-end run: the cutover deployment pauses for approval; the form shows what really answers
each node's URL; a rejection without a reason is refused at the form; the rejection with one
resumes the run, which ends without stopping anything.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from apim_upgrade.plan import load_plan
from apim_upgrade.proof import audit
from apim_upgrade.wso2 import node_health
from sandbox.create import sandbox_secrets
from sandbox.nodes import start_estate
from tests.test_deployments import ROOT, _prefect, prefect_server  # noqa: F401 - prefect_server is a fixture

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Chromium (/usr/bin/chromium) is not installed: apt-get install -y chromium"
)


def _api(env: dict[str, str], path: str, body: dict[str, Any] | None = None) -> Any:
    url = env["PREFECT_API_URL"] + path
    answer = httpx.post(url, json=body, timeout=10) if body is not None else httpx.get(url, timeout=10)
    answer.raise_for_status()
    return answer.json()


def _paused_run(env: dict[str, str], worker: subprocess.Popen[bytes], log: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _api(env, "/flow_runs/filter", {"flow_runs": {"state": {"name": {"any_": ["Paused"]}}}})
        if runs:
            return dict(runs[0])
        if worker.poll() is not None:
            pytest.fail(f"the worker ended before the cutover paused:\n{log.read_text()[-4000:]}")
        time.sleep(1)
    pytest.fail(f"the cutover never paused for approval:\n{log.read_text()[-4000:]}")


def _home_pid(node: Any) -> str:
    script = next(Path(arg) for arg in node.start if arg.endswith("api-manager.sh"))
    return (script.parents[1] / "wso2carbon.pid").read_text().strip()


def test_the_cutover_is_rejected_in_the_prefect_ui_and_nothing_stops(
    prefect_server: dict[str, str],  # noqa: F811 - the fixture imported above
    make_sandbox: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    plan_path = make_sandbox(jvm=True)
    plan = load_plan(plan_path)
    assert plan.cutover is not None
    secrets = sandbox_secrets(plan_path.parent)
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    start_estate(plan.cutover)
    cp400 = plan.cutover.control_plane_400[0]
    pid400 = _home_pid(cp400)
    sources = f"{plan.databases.apim.source}, {plan.databases.shared.source}"

    env = dict(prefect_server, APIM_UPGRADE_HOME=str(ROOT), APIM_UPGRADE_PLAN=str(plan_path), **secrets)
    env["APIM_STANDIN_SPEED"] = "20"
    _prefect(env, "work-pool", "create", "apim-upgrade", "--type", "process", "--overwrite")
    _prefect(env, "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    out = _prefect(env, "deployment", "run", "upgrade-apim/cutover")
    parent = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert parent, out

    log = tmp_path / "worker.log"
    with open(log, "wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "--no-prompt", "worker", "start", "--pool", "apim-upgrade", "--run-once"],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        paused = _paused_run(env, worker, log, timeout=300)
        ui = env["PREFECT_API_URL"].removesuffix("/api")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.goto(f"{ui}/runs/flow-run/{paused['id']}")
                page.get_by_role("button", name="Resume").first.click()
                form = page.get_by_role("dialog")
                expect(form).to_contain_text("Resume Flow Run")
                page.screenshot(path=tmp_path / "1-approval-form.png", full_page=True)
                line = form.get_by_text(f"cp-400: running 4.0.0 on {sources}")
                line.scroll_into_view_if_needed()  # the plan above it is long: the form scrolls
                expect(line).to_be_visible()
                page.screenshot(path=tmp_path / "2-node-states.png", full_page=True)
                shown = form.inner_text()
                # The real state of the estate: which home and process answers, on which databases.
                assert f"cp-400: running 4.0.0 on {sources} (home {cp400.carbon_home}, pid {pid400})" in shown, shown
                assert f"cp-440: its URL is served by cp-400 (4.0.0 on {sources}" in shown, shown

                def field(label: str) -> Any:
                    return form.locator(".schema-form-property").filter(has_text=label).locator("textarea")

                field("Decided By").fill("carol@cab")
                form.get_by_role("button", name="Submit").click()  # a rejection without a reason
                expect(form).to_contain_text("should be non-empty")
                page.screenshot(path=tmp_path / "3-reason-required.png", full_page=True)
                assert _api(env, f"/flow_runs/{paused['id']}")["state"]["name"] == "Paused"

                field("Reason").fill("change freeze until Monday")
                form.get_by_role("button", name="Submit").click()
                expect(form).to_be_hidden()
                expect(page.get_by_text("Flow run resumed").first).to_be_visible()  # the toast
                page.screenshot(path=tmp_path / "4-submitted.png", full_page=True)
            finally:
                browser.close()
        assert worker.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)

    state = _api(env, f"/flow_runs/{parent[1]}")["state"]
    assert state["type"] == "COMPLETED", state
    records = audit.read_records(plan.audit_path)
    decision = [r for r in records if r.step == "approval"][-1]
    assert decision.outcome == "rejected" and decision.details["by"] == "carol@cab"
    assert decision.details["reason"] == "change freeze until Monday"
    assert not [r for r in records if r.step.startswith(("stop_", "start_"))], "a rejected cutover stopped something"
    # Production still serves 4.0.0, from the same process.
    for node in (cp400, *[n.replaces for g in plan.cutover.gateway_groups for n in g.nodes if n.replaces]):
        ok, body = node_health.http_check(node.health_url)
        assert ok and '"4.0.0"' in body, (node.name, body)
    assert _home_pid(cp400) == pid400
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "1-approval-form.png",
        "2-node-states.png",
        "3-reason-required.png",
        "4-submitted.png",
    ]
