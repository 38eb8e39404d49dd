"""The cutover inside a window: nothing acknowledged is lost, writes in the window are refused,
rollback works from inside it, a node that cannot start is reported at once, the window is measured."""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from apim_upgrade import window
from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db
from apim_upgrade.proof import audit
from apim_upgrade.proof.ledger import read_ledger
from apim_upgrade.wso2 import node_health, node_identity
from flows.cutover import rollback
from flows.upgrade_apim import upgrade_apim
from sandbox.demo import accept_invalid_apis
from sandbox.nodes import start_estate, stop_everything
from sandbox.traffic import missing_writes, start_traffic, stop_traffic

pytestmark = pytest.mark.usefixtures("prefect_api")

INSERT = (
    "INSERT INTO am_subscriber (user_id, tenant_id, email_address, date_subscribed) "
    "VALUES (%s, -1234, 'writer@example.com', now())"
)


@pytest.fixture
def estate(make_sandbox: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Any:
    """A running 4.0.0 estate (control plane with its pools, gateways) with no copies yet: a cutover's start."""
    from sandbox.create import sandbox_secrets

    plan_path = make_sandbox(jvm=True)
    for name, value in sandbox_secrets(plan_path.parent).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APIM_STANDIN_SPEED", "20")
    accept_invalid_apis(plan_path)
    _edit(plan_path, "cutover", unattended=True, session_wait_seconds=30)
    start_estate(load_plan(plan_path).cutover)  # type: ignore[arg-type]
    yield plan_path
    stop_everything(plan_path.parent)


def _edit(plan_path: Path, section: str, **values: Any) -> None:
    doc = tomllib.loads(plan_path.read_text())
    doc[section].update(values)
    plan_path.write_text(tomli_w.dumps(doc))


class Writer(threading.Thread):
    """A client of the sources: one autocommit insert per session, acknowledged or refused, never lost."""

    def __init__(self, pg: db.PgServer, dbname: str) -> None:
        super().__init__(daemon=True)
        self.pg, self.dbname = pg, dbname
        self.acknowledged: list[str] = []
        self.refused: tuple[str, str] | None = None  # (row, why)
        self.done = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.done.is_set():
            row = f"writer.{i}"
            try:
                with db.session(self.pg, self.dbname, autocommit=True, application_name="test-writer") as conn:
                    db.execute(conn, INSERT, (row,))
            except Exception as exc:  # noqa: BLE001 - any refusal ends the client, with its reason
                self.refused = (row, str(exc))
                return
            self.acknowledged.append(row)
            i += 1
            time.sleep(0.05)


def _rows(pg: db.PgServer, dbname: str) -> set[str]:
    with db.session(pg, dbname, read_only=True) as conn:
        return {
            str(r[0]) for r in db.fetch_all(conn, "SELECT user_id FROM am_subscriber WHERE user_id LIKE 'writer.%'")
        }


def _insert_works(pg: db.PgServer, dbname: str) -> bool:
    try:
        with db.session(pg, dbname, autocommit=True) as conn:
            db.execute(conn, INSERT, (f"probe.{time.monotonic_ns()}",))
        return True
    except Exception:  # noqa: BLE001
        return False


def test_a_cutover_inside_its_window_loses_nothing_and_measures_the_window(estate: Path, pg: db.PgServer) -> None:
    plan = load_plan(estate)
    assert plan.cutover is not None
    cp400, cp440 = plan.cutover.control_plane_400[0], plan.cutover.control_plane_440[0]
    writer = Writer(pg, plan.databases.apim.source)
    writer.start()
    # And the estate's own clients, through the control plane and the gateways, into the ledger.
    _, ledger_path = start_traffic(estate, rate=8, app_every=4)
    time.sleep(1.5)  # writes acknowledged while 4.0.0 serves

    results = upgrade_apim(plan=str(estate), mode="cutover")
    writer.done.set()
    writer.join(10)
    time.sleep(1.0)  # and while 4.4.0 serves
    stop_traffic(estate.parent)

    assert results["cutover"].startswith("cut over"), results
    assert results["window"].startswith("open (approved by unattended"), results
    assert '"4.4.0"' in node_health.http_check(cp440.health_url)[1]
    # The order: nothing copied before the window opened, copies only after 4.0.0 stopped.
    steps = [(r.phase, r.step) for r in audit.read_records(plan.audit_path)]
    assert steps.index(("window", "fence_sources")) < steps.index(("prepare-databases", "preflight"))
    assert steps.index(("migration-environment", "unpack_distribution")) < steps.index(("window", "approval"))
    assert steps.index(("window", "stop_control_plane_400")) < steps.index(("window", "wait_for_sessions"))
    # Every acknowledged write is in the 4.4.0 database; the one attempted in the window was refused.
    assert len(writer.acknowledged) >= 5, writer.acknowledged
    assert writer.refused is not None and "read-only" in writer.refused[1], writer.refused
    migrated = _rows(pg, plan.databases.apim.target)
    assert set(writer.acknowledged) <= migrated, set(writer.acknowledged) - migrated
    assert writer.refused[0] not in migrated | _rows(pg, plan.databases.apim.source)  # refused, not dropped
    assert not _insert_works(pg, plan.databases.apim.source)  # the old sources stay fenced after the switch

    records = audit.read_records(plan.audit_path)
    measured = [r for r in records if r.step == "window_measured"][-1]
    assert measured.details["window_s"] > 0
    _traffic_survived(pg, plan, ledger_path, measured.details)
    gateways = [r for r in records if r.step == "restart_gateways"][-1].details["nodes"]
    assert all(g["out_of_service_s"] and g["out_of_service_s"] > 0 for g in gateways), gateways
    stages = [r.details.get("stage") for r in records if r.step == "check_conformance" and r.details.get("stage")]
    assert stages == ["before-start", "after-start"], stages
    from prefect.artifacts import Artifact

    shown = Artifact.get("cutover-plan")
    assert shown is not None and isinstance(shown.data, str)
    assert "### Expected window" in shown.data and "No successful rehearsal" in shown.data
    assert "apim-upgrade rollback" in shown.data
    assert '"4.0.0"' not in node_health.http_check(cp400.health_url)[1]
    report = (plan.work_dir / "reports" / "report.html").read_text()
    assert "Window" in report and "after-start" in report
    assert 'aria-label="Traffic ledger: ' in report and "cutover window" in report  # charted, window shaded


def _traffic_survived(pg: db.PgServer, plan: Any, ledger_path: Path, window_details: dict[str, Any]) -> None:
    """The ledger's story: acknowledged writes all in 4.4.0's databases; window writes refused, not dropped."""
    opened = datetime.fromisoformat(window_details["stopped_400_at"])
    closed = datetime.fromisoformat(window_details["healthy_440_at"])
    entries = read_ledger(ledger_path)
    targets = {role: pair.target for role, pair in plan.databases.roles().items()}
    acknowledged = [e for e in entries if e.acknowledged_write]
    before = [e for e in acknowledged if e.ended < opened]
    assert {e.call for e in before} >= {"token", "keys", "application", "subscription"}, len(before)
    assert [e for e in acknowledged if e.at > closed], "4.4.0 took writes after the window"
    lost = missing_writes(pg, targets, acknowledged)
    assert not lost, [(e.at, e.call, e.wrote) for e in lost[:5]]
    # Inside the window no control plane serves: every write attempted there was refused (and is in the
    # ledger as failed), unless the 4.4.0 already answering acknowledged it, into its own databases above.
    writes = ("token", "application", "keys", "subscription")
    inside = [e for e in entries if e.call in writes and opened <= e.at <= closed]
    refused = [e for e in inside if not e.ok]
    assert refused and all(e.status in (None, 503) for e in refused), [(e.status, e.error) for e in refused[:5]]
    # The gateways kept serving API calls through the window (they are restarted only after it).
    calls = [e for e in entries if e.call == "invoke" and opened <= e.at <= closed]
    assert calls and all(e.ok for e in calls), [(e.at, e.error) for e in calls if not e.ok][:5]


@pytest.mark.parametrize("until", ["window", "prepare-databases", "api-migration"])
def test_rollback_from_inside_the_window(estate: Path, pg: db.PgServer, until: str) -> None:
    plan = load_plan(estate)
    assert plan.cutover is not None
    cp400 = plan.cutover.control_plane_400[0]
    upgrade_apim(plan=str(estate), mode="cutover", until_phase=until)
    assert not node_health.http_check(cp400.health_url, timeout=2)[0]  # 4.0.0 stopped, window open
    assert window.read_state(plan) is not None
    assert not _insert_works(pg, plan.databases.apim.source)  # writes are refused in the window

    rolled = rollback(plan_path=str(estate), confirmed=True)
    assert "sources writable again" in rolled, rolled
    assert node_identity.identify(cp400).matches_plan  # 4.0.0 serves again on the untouched sources
    assert _insert_works(pg, plan.databases.apim.source)
    assert window.read_state(plan) is None  # a later cutover asks for approval again
    for group in plan.cutover.gateway_groups:
        for gateway in group.nodes:
            assert gateway.replaces is not None and node_identity.identify(gateway.replaces).matches_plan


def test_a_440_that_cannot_start_is_reported_at_once_with_the_way_back(
    estate: Path, pg: db.PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from commands.cli import main

    unset = "APIM_WINDOW_NEVER_SET"  # the variable 4.4.0's deployment.toml will name, never exported
    _edit(estate, "target_440", db_password_env=unset)
    _edit(estate, "cutover", node_timeout_seconds=300)
    plan = load_plan(estate)
    assert plan.cutover is not None
    started = time.monotonic()
    code = main(["run", str(estate)])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert err.startswith("FAILED: ") and "\n" not in err, err
    assert "cp-440" in err and "APIM_WINDOW_NEVER_SET" in err and "ERROR" in err, err
    assert f"apim-upgrade rollback {estate} --yes" in err, err
    starts = [r for r in audit.read_records(plan.audit_path) if r.step == "start_control_plane_440"]
    took = (starts[-1].ended_at - starts[-1].started_at).total_seconds()  # type: ignore[operator]
    assert took < 60, took  # not the 300 s node timeout
    assert time.monotonic() - started < 280

    rolled = rollback(plan_path=str(estate), confirmed=True)
    assert node_identity.identify(plan.cutover.control_plane_400[0]).matches_plan, rolled
    assert _insert_works(pg, plan.databases.apim.source)


def test_the_window_is_forecast_from_the_latest_rehearsal(make_sandbox: Callable[..., Path]) -> None:
    """A rehearsal trail with phase timings and source sizes gives the forecast, scaled by growth."""
    from datetime import UTC, datetime, timedelta

    plan = load_plan(make_sandbox())
    trail = plan.work_dir / "rehearsal_20260101" / "work" / "audit.jsonl"
    trail.parent.mkdir(parents=True)
    t0 = datetime(2026, 1, 1, 2, tzinfo=UTC)
    sizes = {plan.databases.apim.source: 1000, plan.databases.shared.source: 1000}

    def rec(phase: str, step: str, start: int, end: int, **details: Any) -> None:
        audit.append_record(
            trail,
            plan="r",
            plan_digest="d",
            phase=phase,
            step=step,
            flow_run_id=None,
            inputs=None,
            started_at=t0 + timedelta(seconds=start),
            ended_at=t0 + timedelta(seconds=end),
            outcome="succeeded",
            details=details,
        )

    rec("prepare-databases", "preflight", 0, 1, source_bytes=sizes)
    rec("prepare-databases", "copy_database", 1, 11)
    rec("schema-upgrade", "apply_sql_script", 20, 24)
    rec("cutover", "start_control_plane_440", 30, 36)
    rec("cutover", "restart_gateways", 36, 90)  # after the window: not part of it
    rec("cutover", "mark_phase_done", 90, 91)
    forecast = window.forecast(plan, {k: 2 * v for k, v in sizes.items()})
    by_phase = {p["phase"]: p for p in forecast.phases}
    assert forecast.rehearsal == "rehearsal_20260101" and forecast.growth == 2.0
    assert by_phase["prepare-databases"]["forecast_s"] == 22.0  # 11 s, twice the data
    assert by_phase["schema-upgrade"]["forecast_s"] == 8.0
    assert by_phase["cutover"]["forecast_s"] == 6.0  # a node start does not grow with data
    assert forecast.total_seconds == 36.0
    assert any("Expected window: **36.0 s**" in line for line in forecast.markdown())


def test_a_rerun_inside_the_window_continues_inside_it(estate: Path, pg: db.PgServer) -> None:
    """Stopped after the copies (a crash inside the window): the rerun asks nothing again and finishes."""
    plan = load_plan(estate)
    upgrade_apim(plan=str(estate), mode="cutover", until_phase="prepare-databases")
    opened = window.read_state(plan)
    assert opened is not None and opened.stopped_400_at is not None

    results = upgrade_apim(plan=str(estate), mode="cutover")
    assert results["cutover"].startswith("cut over"), results
    records = audit.read_records(plan.audit_path)
    assert len([r for r in records if r.step == "approval"]) == 1  # one approval for one window
    copies = [r for r in records if r.step == "copy_database"]
    assert copies and all(r.outcome == "skipped" for r in copies[-2:])  # the rerun kept the verified copies
    state = window.read_state(plan)
    assert state is not None and state.stopped_400_at == opened.stopped_400_at and state.closed_at is not None
