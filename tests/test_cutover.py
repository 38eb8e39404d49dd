"""configure-440 and cutover on stand-in nodes: re-indexing, carry-over, drift, approval, gateways, rollback."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db, history
from apim_upgrade.proof import audit
from apim_upgrade.proof.ledger import read_ledger
from apim_upgrade.rehearsal import rehearsal_suffix
from apim_upgrade.runtime import process
from apim_upgrade.wso2 import node_health, node_identity, nodes
from flows.cutover import cutover, rollback
from flows.phases import run_phase
from flows.upgrade_apim import upgrade_apim
from sandbox.create import destroy_sandbox
from sandbox.demo import accept_invalid_apis
from sandbox.distribution.config import POOL_INITIAL_SIZE_VARIABLE
from sandbox.nodes import CUSTOM_JAR, production_nodes, start_estate, stop_everything
from sandbox.traffic import generator_processes, missing_writes, start_traffic
from tasks.cutover import SourceDrift
from tests.cli import run_cli

pytestmark = pytest.mark.usefixtures("prefect_api")


def _edit_plan(plan_path: Path, section: str, **values: Any) -> None:
    doc = tomllib.loads(plan_path.read_text())
    doc[section].update(values)
    plan_path.write_text(tomli_w.dumps(doc))


def _edit_old_toml(plan_path: Path, **tables: dict[str, Any]) -> None:
    conf = load_plan(plan_path).target_440.old_home / "repository/conf/deployment.toml"  # type: ignore[union-attr]
    doc = tomllib.loads(conf.read_text())
    doc.update(tables)
    conf.write_text(tomli_w.dumps(doc))


def _rendered(plan_path: Path) -> dict[str, Any]:
    home = load_plan(plan_path).target_440.home  # type: ignore[union-attr]
    return tomllib.loads((home / "repository/conf/deployment.toml").read_text())


def test_configure_440_reindexing_and_carry_over_conflicts(jvm_sandbox: Path) -> None:
    plan = load_plan(jvm_sandbox)
    assert "re_indexing = 1" in run_phase("configure-440", plan)  # no [indexing] in the 4.0.0 file
    rendered = _rendered(jvm_sandbox)
    assert rendered["indexing"]["re_indexing"] == 1
    assert rendered["database"]["apim_db"]["url"].endswith("/" + plan.databases.apim.target)
    assert all(e.get("gateway_type") == "Regular" for e in rendered["apim"]["gateway"]["environment"])

    _edit_old_toml(jvm_sandbox, indexing={"re_indexing": 10})
    run_phase("configure-440", plan)  # rerunnable: renders from the pack default again
    assert _rendered(jvm_sandbox)["indexing"]["re_indexing"] == 11

    # The 4.4.0 pack happens to ship its own, different file where a customisation goes.
    (plan.target_440.home / CUSTOM_JAR).write_bytes(b"not the estate's jar")  # type: ignore[union-attr]
    with pytest.raises(ApimUpgradeError, match=r"acme-auth-handler-1\.0\.0\.jar: conflicting"):
        run_phase("configure-440", plan)
    _edit_plan(jvm_sandbox, "target_440", conflict_policy="keep-440")
    run_phase("configure-440", load_plan(jvm_sandbox))
    record = [r for r in audit.read_records(plan.audit_path) if r.step == "carry_over_customisations"][-1]
    outcomes = {r["path"]: r["outcome"] for r in record.details["results"]}
    assert outcomes[CUSTOM_JAR] == "conflicting" and "skipped (identical)" in outcomes.values()


def _paused_run_id(deadline: float) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStateName

    async def find() -> str | None:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=dict(name=FlowRunFilterStateName(any_=["Paused"])))
            )
        return str(runs[0].id) if runs else None

    while time.monotonic() < deadline:
        found = asyncio.run(find())
        if found:
            return found
        time.sleep(0.5)
    pytest.fail("the cutover never paused for approval")


def _run_cutover_with_decision(plan_path: Path, decision: dict[str, Any]) -> str:
    from prefect.flow_runs import resume_flow_run

    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(cutover(plan_path=str(plan_path))), daemon=True)
    worker.start()
    run_id = _paused_run_id(time.monotonic() + 120)
    # An approval without a name, a rejection without a reason: the server refuses, the run stays paused.
    incomplete = {"approve": decision["approve"], "decided_by": "" if decision["approve"] else "x", "reason": " "}
    with pytest.raises(RuntimeError, match=r"Cannot resume this run: .*(decided_by|reason)"):
        resume_flow_run(run_id, run_input=incomplete)  # type: ignore[arg-type]
    resume_flow_run(run_id, run_input=decision)  # type: ignore[arg-type]
    worker.join(300)
    assert results, "the cutover flow did not finish"
    return str(results[0])


def test_drift_rejection_approval_and_rollback(jvm_sandbox: Path, pg: db.PgServer) -> None:
    plan = load_plan(jvm_sandbox)
    cp400, cp440 = plan.cutover.control_plane_400[0], plan.cutover.control_plane_440[0]  # type: ignore[union-attr]
    start_estate(plan.cutover)  # type: ignore[arg-type]
    run_phase("configure-440", plan)

    with db.session(pg, plan.databases.apim.source) as conn:  # production keeps working after the copy
        db.execute(
            conn,
            "INSERT INTO am_subscriber (user_id, tenant_id, email_address, date_subscribed) "
            "VALUES ('late.user', -1234, 'late@example.com', now())",
        )
    with pytest.raises(SourceDrift, match=r"am_subscriber"):
        cutover(plan_path=str(jvm_sandbox))
    _edit_plan(jvm_sandbox, "cutover", accept_drift=True)

    outcome = _run_cutover_with_decision(
        jvm_sandbox, {"approve": False, "decided_by": "alice", "reason": "window moved"}
    )
    assert outcome == "rejected by alice: window moved"
    assert '"4.0.0"' in node_health.http_check(cp400.health_url)[1]  # nothing was touched
    approval = [r for r in audit.read_records(plan.audit_path) if r.step == "approval"][-1]
    assert approval.details["decision"] == "reject" and approval.details["by"] == "alice"
    # The approval form showed the estate as it really was: which home and process, on which databases.
    shown = _approval_markdown()
    sources = f"{plan.databases.apim.source}, {plan.databases.shared.source}"
    pid400 = _home_pid(cp400)
    assert f"- cp-400: running 4.0.0 on {sources} (home {cp400.carbon_home}, pid {pid400})" in shown, shown
    assert f"- cp-440: its URL is served by cp-400 (4.0.0 on {sources}" in shown  # same host and ports
    assert "- gw-internal-1: its URL is served by gw-internal-1-400 (4.0.0 on H2, H2" in shown
    checked = [r for r in audit.read_records(plan.audit_path) if r.step == "check_nodes"][-1]
    assert {n["node"]: n["pid"] for n in checked.details["nodes"]}["cp-400"] == int(pid400 or 0)

    outcome = _run_cutover_with_decision(jvm_sandbox, {"approve": True, "decided_by": "bob", "reason": "go"})
    assert outcome.startswith("cut over (approved by bob): 20 APIs visible, 3 gateway node(s) restarted")
    assert '"4.4.0"' in node_health.http_check(cp440.health_url)[1]
    started = [r for r in audit.read_records(plan.audit_path) if r.step == "start_control_plane_440"][-1]
    assert any("WSO2 Carbon started in" in line for line in started.details["server_up"])
    assert any("API Publisher Default Context" in line for line in started.details["server_up"])
    assert history.completed(pg, plan.databases.apim.target, "cutover", "done")

    gateways = [n for g in plan.cutover.gateway_groups for n in g.nodes]  # type: ignore[union-attr]
    assert all(node_identity.identify(g).matches_plan for g in gateways)  # the 4.4.0 gateways serve

    with pytest.raises(ApimUpgradeError, match=r"confirm it .*--yes"):
        rollback(plan_path=str(jvm_sandbox))  # stops nothing unconfirmed
    assert '"4.4.0"' in node_health.http_check(cp440.health_url)[1]
    rolled = rollback(plan_path=str(jvm_sandbox), confirmed=True)
    assert rolled.startswith("rolled back") and "cp-440: stopped" in rolled, rolled
    assert '"4.0.0"' in node_health.http_check(cp400.health_url)[1]  # 4.0.0 again, on the untouched sources
    for gateway in gateways:  # one at a time back to the 4.0.0 node each replaced
        assert f"{gateway.name}: back on 4.0.0: '{gateway.name}-400' started" in rolled, rolled
        assert gateway.replaces is not None and node_identity.identify(gateway.replaces).matches_plan
    assert history.completed(pg, plan.databases.apim.target, "cutover", "done") is None
    steps = [(r.phase, r.step) for r in audit.read_records(plan.audit_path)]
    assert ("rollback", "start_control_plane_400") in steps


def test_failing_gateway_stops_the_rollout(jvm_sandbox: Path) -> None:
    plan = load_plan(jvm_sandbox)
    section = plan.cutover
    assert section is not None
    start_estate(section)
    run_phase("configure-440", plan)
    doc = tomllib.loads(jvm_sandbox.read_text())
    doc["cutover"]["unattended"] = True
    doc["cutover"]["gateway_groups"][0]["nodes"][0]["start"] = ["false"]  # gw-internal-1 will not come back
    jvm_sandbox.write_text(tomli_w.dumps(doc))
    with pytest.raises(node_health.NodeError, match="gw-internal-1"):
        cutover(plan_path=str(jvm_sandbox))
    record = [r for r in audit.read_records(plan.audit_path) if r.step == "restart_gateways"][-1]
    states = {n["node"]: n["state"] for n in record.details["nodes"]}
    assert states == {"gw-internal-1": "failed", "gw-internal-2": "untouched", "gw-external-1": "untouched"}
    for group in section.gateway_groups:
        for node in group.nodes:
            if node.name != "gw-internal-1":  # the untouched nodes were never stopped
                assert node_health.http_check(node.health_url)[0], node.name


def _pool_pids(pg: db.PgServer, *sources: str) -> dict[str, set[int]]:
    """Backend pids of the stand-in control plane's pooled sessions on each source."""
    with db.session(pg, "postgres", read_only=True) as conn:
        rows = db.fetch_all(
            conn,
            "SELECT datname, pid FROM pg_stat_activity WHERE datname = ANY(%s) AND application_name = %s",
            (list(sources), "PostgreSQL JDBC Driver"),
        )
    return {s: {int(pid) for d, pid in rows if d == s} for s in sources}


def _approval_markdown() -> str:
    from prefect.artifacts import Artifact

    artifact = Artifact.get("cutover-plan")
    assert artifact is not None and isinstance(artifact.data, str)
    return artifact.data


def _start_copy_of(home: Path, where: Path, like: Any, offset: int) -> tuple[Path, int]:
    """Another 4.4.0 home (a copy of ``home``) started with ``like``'s command on [server] offset ``offset``."""
    shutil.copytree(home, where, symlinks=True, ignore=shutil.ignore_patterns("wso2carbon.pid", "logs"))
    conf = where / "repository/conf/deployment.toml"
    doc = tomllib.loads(conf.read_text())
    doc["server"] = {**doc.get("server", {}), "offset": offset}
    conf.write_text(tomli_w.dumps(doc))
    start = [a.replace(str(home), str(where)) for a in like.start]
    process.run(start, timeout=30)
    node_health.wait_until_healthy(f"http://127.0.0.1:{9763 + offset}/health", 60, 0.2, expect_version="4.4.0")
    return where, int((where / "wso2carbon.pid").read_text())


def _free_offset() -> int:
    """A [server] offset whose HTTP port is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1]) - 9763


def _stop_copy(copy: Path, home: Path, like: Any) -> None:
    """Stop a copy started by _start_copy_of, with ``like``'s stop command (it carries JAVA_HOME)."""
    process.run([a.replace(str(home), str(copy)) for a in like.stop], timeout=30, check=False)


def _offset(url: str) -> int:
    return int(url.split(":")[2].split("/")[0]) - 9763


def test_a_stray_440_stops_the_cutover_before_anything_is_stopped(jvm_sandbox: Path, tmp_path: Path) -> None:
    plan = load_plan(jvm_sandbox)
    section = plan.cutover
    assert section is not None and plan.target_440 is not None
    cp400 = section.control_plane_400[0]
    nodes.start_node(cp400, 60)
    pid400 = _home_pid(cp400)
    # cp-440 on ports of its own, where a 4.4.0 of another home already answers.
    offset = _free_offset()
    doc = tomllib.loads(jvm_sandbox.read_text())
    base = f"http://127.0.0.1:{9763 + offset}"
    doc["cutover"]["control_plane_440"][0].update(
        health_url=f"{base}/health", publisher_url=f"{base}/api/am/publisher/v4/apis"
    )
    jvm_sandbox.write_text(tomli_w.dumps(doc))
    stray, stray_pid = _start_copy_of(
        plan.target_440.home, tmp_path / "stray-440", section.control_plane_440[0], offset
    )
    try:
        with pytest.raises(node_health.NodeError) as refused:
            cutover(plan_path=str(jvm_sandbox))
        message = str(refused.value)
        assert "before the approval" in message and "nothing was stopped" in message
        assert f"home {stray.resolve()}, pid {stray_pid}" in message and f"kill {stray_pid}" in message
        assert f"`{stray.resolve()}/bin/api-manager.sh stop`" in message
        assert _home_pid(cp400) == pid400 and '"4.0.0"' in node_health.http_check(cp400.health_url)[1]  # untouched
        records = audit.read_records(plan.audit_path)
        assert not [r for r in records if r.step.startswith(("stop_control_plane", "approval"))]
        checked = [r for r in records if r.step == "check_nodes"][-1]
        states = {n["node"]: n for n in checked.details["nodes"]}
        assert states["cp-440"]["pid"] == stray_pid and not states["cp-440"]["ok"]
        assert states["cp-400"]["ok"] and states["cp-400"]["pid"] == int(pid400 or 0)
    finally:
        _stop_copy(stray, plan.target_440.home, section.control_plane_440[0])


def test_rollback_asks_first_and_stops_only_the_estates_own_440(
    jvm_sandbox: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from commands.cli import main

    plan = load_plan(jvm_sandbox)
    section = plan.cutover
    assert section is not None and plan.target_440 is not None
    cp400, cp440 = section.control_plane_400[0], section.control_plane_440[0]
    offset = _offset(cp440.health_url)  # 4.4.0 on the 4.0.0 control plane's ports, 4.0.0 down

    # No terminal and no --yes: one line, nothing stopped.
    assert main(["rollback", str(jvm_sandbox)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("FAILED: rollback stops the 4.4.0 control plane") and "--yes" in err and "\n" not in err

    foreign, foreign_pid = _start_copy_of(
        plan.target_440.home, tmp_path_factory.mktemp("elsewhere") / "wso2am-4.4.0", cp440, offset
    )
    try:
        refused = rf"home {foreign.resolve()}, pid {foreign_pid}.*no home of this"
        with pytest.raises(node_health.NodeError, match=refused):
            rollback(plan_path=str(jvm_sandbox), confirmed=True)
        assert node_health.http_check(cp440.health_url)[0]  # a foreign server is never stopped
    finally:
        _stop_copy(foreign, plan.target_440.home, cp440)
    node_health.wait_until_down(cp440.health_url, 30, 0.2)

    # A 4.4.0 this estate's runs started: a copy of the home under its work directory.
    ours, our_pid = _start_copy_of(plan.target_440.home, plan.work_dir / "home-440-copy", cp440, offset)
    assert main(["rollback", str(jvm_sandbox), "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"stopped 4.4.0 on H2, H2 (home {ours.resolve()}, pid {our_pid}), a home under the estate's work" in out
    assert not Path(f"/proc/{our_pid}").exists() or not Path(f"/proc/{our_pid}/cmdline").read_bytes()
    assert node_identity.identify(cp400).matches_plan  # the plan's 4.0.0 home serves again
    for group in section.gateway_groups:
        for gateway in group.nodes:
            assert f"{group.name}/{gateway.name}: back on 4.0.0: '{gateway.name}-400' started" in out, out
    record = [r for r in audit.read_records(plan.audit_path) if r.step == "roll_back_gateways"][-1]
    assert {n["state"] for n in record.details["nodes"]} == {"healthy"}


def _home_pid(node: Any) -> str | None:
    """The pid in the node's own home (wso2carbon.pid), from the home its start command runs."""
    script = next(Path(arg) for arg in node.start if arg.endswith("api-manager.sh"))
    pid_file = script.parents[1] / "wso2carbon.pid"
    return pid_file.read_text().strip() if pid_file.exists() else None


def _wait_for_writes(ledger_path: Path, count: int, timeout: float = 30) -> None:
    """Until the traffic generator's ledger shows ``count`` acknowledged writes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ledger_path.exists() and sum(e.acknowledged_write for e in read_ledger(ledger_path)) >= count:
            return
        time.sleep(0.2)
    pytest.fail(f"no {count} acknowledged writes in {ledger_path} within {timeout} s")


def test_rehearsal_on_a_running_estate_leaves_production_serving(
    jvm_sandbox: Path, pg: db.PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(POOL_INITIAL_SIZE_VARIABLE)  # WSO2's own default pool size
    plan = load_plan(jvm_sandbox)
    assert plan.cutover is not None and plan.cutover.rehearsal is not None
    production = production_nodes(plan.cutover)
    rehearsal = plan.cutover.rehearsal
    rehearsal_nodes = [*rehearsal.control_plane_440, *[n for g in rehearsal.gateway_groups for n in g.nodes]]
    try:
        start_estate(plan.cutover)
        # Like WSO2's Tomcat JDBC pools: 10 connections to each of its databases while it runs.
        pool_before = _pool_pids(pg, plan.databases.apim.source, plan.databases.shared.source)
        assert [len(p) for p in pool_before.values()] == [10, 10], pool_before
        before = {n.name: (node_identity.already_healthy(n), _home_pid(n)) for n in production}
        assert all(health and pid for health, pid in before.values()), before
        assert before["cp-400"][0]["version"] == "4.0.0"  # type: ignore[index]
        accept_invalid_apis(jvm_sandbox)
        # Production is live: its clients keep getting tokens, applications, subscriptions, API calls.
        # A real background process: it outlives the `apim-upgrade` process that started it.
        started = run_cli("sandbox", "traffic", "start", str(jvm_sandbox), "--rate", "8", "--app-every", "4")
        assert started.returncode == 0 and "traffic: generator pid" in started.stdout, started.stderr
        ledger_path = jvm_sandbox.parent / "traffic.jsonl"  # the plan's [report] traffic_ledger
        assert load_plan(jvm_sandbox).report.traffic_ledger == ledger_path
        _wait_for_writes(ledger_path, 5)
        rehearsal_started = datetime.now(UTC)

        results = upgrade_apim(plan=str(jvm_sandbox), mode="rehearsal")

        rehearsal_ended = datetime.now(UTC)
        time.sleep(0.5)
        status = run_cli("sandbox", "traffic", "status", str(jvm_sandbox))
        assert "running, pid" in status.stdout and " 0 failed" in status.stdout, status.stdout + status.stderr
        assert run_cli("sandbox", "traffic", "stop", str(jvm_sandbox)).returncode == 0
        assert not generator_processes(jvm_sandbox.parent)
        assert results["cutover"].startswith("cut over"), results
        # Production: the same processes, still healthy, still 4.0.0 on the sources.
        assert {n.name: (node_identity.already_healthy(n), _home_pid(n)) for n in production} == before
        # Not one of production's sessions was terminated: the same backends, before and after.
        assert _pool_pids(pg, plan.databases.apim.source, plan.databases.shared.source) == pool_before
        # Its clients saw nothing: no failed call while the rehearsal ran, and production kept writing.
        during = [e for e in read_ledger(ledger_path) if rehearsal_started <= e.at <= rehearsal_ended]
        assert not [e for e in during if not e.ok], [(e.at, e.call, e.error) for e in during if not e.ok][:5]
        writes = [e for e in during if e.acknowledged_write]
        assert {e.call for e in writes} >= {"token", "application", "subscription"}, len(writes)
        assert {e.call for e in during} >= {"invoke"}
        sources = {"apim": plan.databases.apim.source, "shared": plan.databases.shared.source}
        assert not missing_writes(pg, sources, writes)
        copy_records = [
            r
            for r in audit.read_records(
                load_plan(plan.work_dir / rehearsal_suffix().lstrip("_") / "plan.toml").audit_path
            )
            if r.step == "choose_copy_method"
        ]
        assert copy_records and all(r.details.get("method") == "snapshot" for r in copy_records), copy_records
        with db.session(pg, "postgres") as conn:
            names = {str(r[0]) for r in db.fetch_all(conn, "SELECT datname FROM pg_database")}
        assert plan.databases.apim.source in names and plan.databases.shared.source in names
        # The rehearsal's own nodes served (the audit trail says so) and were stopped before its copies went.
        rehearsal_plan = load_plan(plan.work_dir / rehearsal_suffix().lstrip("_") / "plan.toml")
        records = audit.read_records(rehearsal_plan.audit_path)
        started = [r for r in records if r.step == "start_control_plane_440" and r.outcome == "succeeded"]
        assert [r.details["node"] for r in started] == ["cp-440-rehearsal"]
        assert all(not node_health.http_check(n.health_url, timeout=2)[0] for n in rehearsal_nodes)
        stopped = [r.details["node"] for r in records if r.step == "stop_rehearsal_node"]
        assert set(stopped) == {n.name for n in rehearsal_nodes}
        assert rehearsal_plan.databases.apim.target not in names  # its copies were dropped
        report = (rehearsal_plan.work_dir / "reports" / "report.html").read_text()
        assert 'aria-label="Traffic ledger: ' in report and ", 0 failed" in report  # charted, without a failure
        # `sandbox destroy` stops the generator with the nodes.
        start_traffic(jvm_sandbox)
        assert generator_processes(jvm_sandbox.parent)
        destroy_sandbox(jvm_sandbox)
        assert not generator_processes(jvm_sandbox.parent)
    finally:
        stop_everything(jvm_sandbox.parent)


def test_the_cutover_pauses_only_this_plans_rehearsal_schedules(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.objects import Flow
    from prefect.client.schemas.schedules import CronSchedule

    from tasks.rehearsal import pause_rehearsal_deployments

    ours, other = tmp_path / "ours.toml", tmp_path / "other.toml"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(Flow(name="upgrade-apim"))  # type: ignore[arg-type]

        def deploy(name: str, plan: Path) -> Any:
            return client.create_deployment(
                flow_id,
                name,
                parameters={"plan": str(plan), "mode": "rehearsal"},
                schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron="0 2 * * 6"), active=True)],
            )

        mine, theirs = deploy("rehearsal", ours), deploy("rehearsal-other", ours)
        elsewhere = client.create_deployment(
            client.create_flow(Flow(name="upgrade-apim-x")),  # type: ignore[arg-type]
            "rehearsal",
            parameters={"plan": str(ours)},
            schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron="0 2 * * 6"), active=True)],
        )
        assert pause_rehearsal_deployments(other) == []  # another plan's cutover pauses nothing of ours
        paused = pause_rehearsal_deployments(ours)
        assert len(paused) == 1 and str(mine) in paused[0], paused
        assert [s.active for s in client.read_deployment(mine).schedules] == [False]
        for untouched in (theirs, elsewhere):  # another deployment name, another flow
            assert [s.active for s in client.read_deployment(untouched).schedules] == [True]
        assert pause_rehearsal_deployments(ours) == []  # already paused: nothing more to do
        for dep in (mine, theirs, elsewhere):
            client.delete_deployment(dep)


def test_a_rehearsal_of_a_cut_over_estate_refuses_at_once(make_sandbox: Any, pg: db.PgServer) -> None:
    from apim_upgrade.postgres import queries

    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    target = plan.databases.apim.target
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, queries.drop_database(target))
        db.execute(conn, f'CREATE DATABASE "{target}"')  # type: ignore[arg-type]
    try:
        history.mark_done(pg, target, "cutover", "done", None, {"approved_by": "bob"})
        with pytest.raises(ApimUpgradeError, match=r"already cut over to 4\.4\.0 .*records the cutover done"):
            upgrade_apim(plan=str(plan_path), mode="rehearsal", until_phase="prepare-databases")
        with db.session(pg, "postgres", read_only=True) as conn:
            names = {r[0] for r in db.fetch_all(conn, "SELECT datname FROM pg_database")}
        assert not any(n.startswith(f"{target}_rehearsal_") for n in names)  # refused before any copy
    finally:
        with db.session(pg, "postgres", autocommit=True) as conn:
            db.execute(conn, queries.drop_database(target))


def test_a_paused_cutover_is_named_and_linked_in_its_parent_run() -> None:
    from uuid import UUID

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, LogFilter, LogFilterFlowRunId
    from prefect.logging import get_run_logger
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from tasks.cutover import announce_pause, flow_run_ui_url

    with temporary_settings({PREFECT_UI_URL: None, PREFECT_API_URL: "http://ops.example:4200/api"}):
        assert flow_run_ui_url("r1") == "http://ops.example:4200/runs/flow-run/r1"

    @flow(name="cutover-child")
    def child() -> str:
        return announce_pause()

    @flow(name="cutover-parent")
    def parent() -> tuple[str, str]:
        from prefect.runtime import flow_run

        get_run_logger().info("parent running")
        return child(), str(flow_run.get_id())

    line, parent_id = parent()
    assert "cutover paused for approval in flow run '" in line and "/runs/flow-run/" in line
    child_id = line.split("(", 1)[1].split(")", 1)[0]
    assert line.endswith(f"/runs/flow-run/{child_id}")
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(parent_id)])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["cutover-approval"]))
        )
    deadline = time.monotonic() + 20
    while not any(line in log.message for log in logs) and time.monotonic() < deadline:
        time.sleep(0.5)  # logs reach the API in batches
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(parent_id)])))
    assert any(line in log.message for log in logs), [log.message for log in logs]
    mine = [a for a in artifacts if str(a.flow_run_id) == parent_id]
    assert mine and child_id in str(mine[0].data), artifacts
