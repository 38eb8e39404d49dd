"""The report says where the estate stands now, labels runs by what they ran, and carries row totals to the end."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from apim_upgrade.proof.report import build_report, report_page
from apim_upgrade.proof.report_charts import TableCount, row_counts_svg
from apim_upgrade.proof.report_markdown import summary_markdown
from tests.test_report import PLAN, _Trail

AM = {"role": "apim", "source": "wso2_am_db", "target": "wso2am_am"}
SHARED = {"role": "shared", "source": "wso2_shared_db", "target": "wso2am_shared"}


def _copied(t: _Trail, run: str = "run-1") -> None:
    t.add(run, "prepare-databases", "snapshot_source", details={**AM, "tables": 200, "total_rows": 736_300})
    t.add(run, "prepare-databases", "copy_database", details=AM)
    t.add(run, "prepare-databases", "snapshot_source", details={**SHARED, "tables": 40, "total_rows": 9_000})
    t.add(run, "prepare-databases", "copy_database", details=SHARED)


def _cut_over(t: _Trail) -> None:
    t.add("run-9", "window", "approval", details={"decision": "approve", "by": "bob@cab", "reason": "go"})
    t.add("run-9", "window", "stop_control_plane_400", details={"node": "cp-400", "state": "stopped"})
    t.add("run-9", "cutover", "start_control_plane_440", details={"node": "cp-440", "state": "already running"})
    gateways = [
        {"group": "edge", "node": "gw-1", "state": "healthy"},
        {"group": "edge", "node": "gw-2", "state": "healthy"},
    ]
    t.add("run-9", "cutover", "restart_gateways", details={"groups": ["edge"], "nodes": gateways})


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def _estate(page: str) -> str:
    found = re.search(r'<div class="banner estate">(.*?)</div>', page, re.S)
    assert found, "no 'Estate now' banner"
    return " ".join(_text(found[1]).split())


def test_after_a_cutover_the_report_says_4_4_0_serves(tmp_path: Path) -> None:
    t = _Trail(tmp_path)
    _copied(t)
    _cut_over(t)
    page = build_report(tmp_path).read_text()
    estate = _estate(page)
    assert "4.4.0 serving on wso2am_am, wso2am_shared since 2026-03-01" in estate, estate
    assert "(cp-440: already running)" in estate
    assert "4.0.0 stopped since" in estate and "kept for a rollback" in estate
    assert "gateways restarted on 4.4.0" in estate and "edge/gw-2: healthy" in estate
    # The step table shows what each node step found: "already running" is not hidden behind "succeeded".
    assert re.search(
        r"<td>cutover/start_control_plane_440</td><td>cp-440</td><td>.*?</td><td>already running</td>", page
    )


def test_after_a_rollback_the_report_says_4_0_0_serves_again(tmp_path: Path) -> None:
    t = _Trail(tmp_path)
    _copied(t)
    _cut_over(t)
    t.add("run-10", "rollback", "stop_control_plane_440", details={"node": "cp-440", "state": "stopped"})
    t.add("run-10", "rollback", "start_control_plane_400", details={"node": "cp-400", "state": "started"})
    back = [{"group": "edge", "name": "gw-1", "state": "healthy", "detail": "back on 4.0.0"}]
    back.append({"group": "edge", "name": "gw-2", "state": "untouched", "detail": "stays: no replaces"})
    t.add("run-10", "rollback", "roll_back_gateways", details={"nodes": back})
    page = build_report(tmp_path).read_text()
    assert "Succeeded" in page
    estate = _estate(page)
    assert "4.0.0 serving on the sources (wso2_am_db, wso2_shared_db) since" in estate and "after a rollback" in estate
    assert "4.4.0 stopped after rollback" in estate and "(stopped)" not in estate
    assert "gateways rolled back at" in estate and "edge/gw-1: healthy; edge/gw-2: untouched" in estate
    assert "4.4.0 serving" not in estate
    # The Prefect summary says the same.
    md = summary_markdown(report_page(tmp_path)[0])
    assert "**Estate now:**" in md and "4.4.0 stopped after rollback" in md


def test_a_rejected_or_unswitched_estate_still_runs_4_0_0(tmp_path: Path) -> None:
    t = _Trail(tmp_path)
    _copied(t)
    assert "no step of these runs stopped it" in _estate(build_report(tmp_path).read_text())
    t.add("run-9", "window", "approval", "rejected", details={"decision": "reject", "by": "carol", "reason": "freeze"})
    estate = _estate(build_report(tmp_path).read_text())
    assert "4.0.0 serving on the sources (wso2_am_db, wso2_shared_db): the cutover was rejected by carol" in estate


def test_a_rehearsal_says_production_is_untouched_and_its_copies_gone(tmp_path: Path) -> None:
    t = _Trail(tmp_path, plan=f"{PLAN}_rehearsal_20260301")
    _copied(t)
    t.add("run-2", "cutover", "start_control_plane_440", details={"node": "cp-440-rehearsal", "state": "started"})
    assert "rehearsal's 4.4.0 (cp-440-rehearsal) still running" in _estate(build_report(tmp_path).read_text())
    # The parent run's clean-up: every phase found done (skipped), then the rehearsal's nodes and copies.
    for phase in ("identity-migration", "api-migration"):
        t.add("run-3", phase, "check_phase_done", "skipped", details={"reason": "already completed on this copy"})
    t.add("run-3", "rehearsal", "stop_rehearsal_node", details={"node": "cp-440-rehearsal", "state": "stopped"})
    t.add("run-3", "rehearsal", "drop_rehearsal_copies", details={"dropped": ["wso2am_am", "wso2am_shared"]})
    page = build_report(tmp_path).read_text()
    estate = _estate(page)
    assert "production untouched" in estate and "rehearsal's nodes stopped (cp-440-rehearsal)" in estate
    assert "rehearsal copies dropped (wso2am_am, wso2am_shared)" in estate
    # The clean-up run is labelled by what it ran; the phases it found done are named as skipped.
    runs = re.search(r"<h3>Flow runs</h3>(.*?)</table>", page, re.S)
    assert runs and "<td>rehearsal (skipped: identity-migration, api-migration)</td>" in runs[1], runs
    assert "<td>identity-migration, api-migration, rehearsal</td>" not in runs[1]


def _counted(role: str, target: str, total: int) -> dict[str, Any]:
    return {"target": target, "tables": 200, "total_rows": total}


def test_row_totals_go_on_to_4_4_0_running(tmp_path: Path) -> None:
    t = _Trail(tmp_path)
    _copied(t)
    t.add("run-4", "api-migration", "snapshot_targets", details={"apim_rows": 736_300, "shared_rows": 9_000})
    t.add("run-4", "api-migration", "validate_migration", details={"apim": {"tables": 201, "total_rows": 736_310}})
    t.add(
        "run-5",
        "schema-upgrade",
        "snapshot_target",
        details={"checkpoint": "at-4.3.0", "target": "wso2am_am", "tables": 201, "total_rows": 736_310},
    )
    t.add(
        "run-5",
        "schema-upgrade",
        "validate_script",
        details={"checkpoint": "after-4.4.0", "target": "wso2am_am", "tables": 205, "total_rows": 736_400},
    )
    rows = {"apim": _counted("apim", "wso2am_am", 736_450), "shared": _counted("shared", "wso2am_shared", 9_001)}
    t.add("run-9", "cutover", "check_conformance", details={"label": "440-after-start", "rows": rows})
    page = build_report(tmp_path).read_text()
    table = re.search(r"<h3>Row totals at each checkpoint</h3>(.*?)</table>", page, re.S)
    assert table
    labels = re.findall(r"<tr><td class=num>\d+</td><td>[^<]*</td><td>([^<]*)</td><td>(\w+)</td>", table[1])
    assert labels == [
        ("source snapshot", "apim"),
        ("source snapshot", "shared"),
        ("before api-migration", "apim"),
        ("before api-migration", "shared"),
        ("after api-migration", "apim"),
        ("at-4.3.0", "apim"),
        ("after-4.4.0", "apim"),
        ("after 4.4.0&#39;s first start", "apim"),
        ("after 4.4.0&#39;s first start", "shared"),
    ], labels
    assert "<td class=num>736,450</td><td class=num>+50</td>" in table[1]  # 4.4.0's first start added 50 rows
    assert "<td class=num>9,001</td><td class=num>+1</td>" in table[1]


def test_row_count_chart_is_logarithmic_so_small_tables_stay_readable() -> None:
    svg = row_counts_svg([TableCount("tokens", 4_000_000, 4_000_000), TableCount("am_api", 40, 40)], "rows")
    widths = {
        label: float(width)
        for width, label in re.findall(r'<rect x="[^"]+" y="[^"]+" width="([^"]+)" [^>]*><title>([^:]+): source', svg)
    }
    assert widths["am_api"] > 0.2 * widths["tokens"], widths  # linear: 0.001 %
    assert "rows (log scale)" in svg and ">1,000,000</text>" in svg
