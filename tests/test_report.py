"""The run report: rebuilt from a work directory, self-contained, honest about the chain, renders in a browser."""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import tomli_w

from apim_upgrade.errors import AuditError
from apim_upgrade.postgres.catalog import Snapshot
from apim_upgrade.proof import audit
from apim_upgrade.proof.report import build_report, report_command
from apim_upgrade.proof.report_charts import Bar, TableCount, row_counts_svg, timeline_svg

PLAN = "prod-estate"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SHA_43 = "a08a1770e9040adcab42b8e69b42c6e6d24b94b0a0ac828974573a2606230530"
SHA_44 = "10da292a1de30ce495cf0c9d2ef2a63e120f958ed23ae542c61553051b2831ff"
COPY_ERROR = "quality gate 'copy-apim' failed (1 expectation(s)): row count differs from the source snapshot"
CONFORMANCE_ERROR = "quality gate 'conformance-440' failed: wso2am_am: index_extra:am_api.my_custom_idx"
DATA_DOCS = Path("gx", "uncommitted", "data_docs", "local_site", "index.html")
CHROMIUM = Path("/usr/bin/chromium")
# Headless, offline and stateless: no GPU, no network side traffic, a throwaway profile per call.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
CHROMIUM_FLAGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
SECTIONS = ["Summary", "Timeline", "Quality gates", "Row counts", "Pre-migration findings", "SQL scripts"]
SECTIONS += ["Schema conformance", "Cutover decisions", "Files"]


class _Trail:
    """Writes records as audited_step would, on a fake clock."""

    def __init__(self, work: Path, plan: str = PLAN) -> None:
        self.path = work / "audit.jsonl"
        self.clock = 0.0
        self.plan = plan

    def add(self, run: str, phase: str, step: str, outcome: str = "succeeded", took: float = 1.0, **kw: Any) -> None:
        start = T0 + timedelta(seconds=self.clock)
        self.clock += took + 0.5
        end = None if outcome == "started" else start + timedelta(seconds=took)
        audit.append_record(
            self.path,
            plan=self.plan,
            plan_digest="ab" * 32,
            phase=phase,
            step=step,
            started_at=start,
            ended_at=end,
            outcome=outcome,
            flow_run_id=run,
            actor="alice@ops-host",
            **kw,
        )
        if outcome == "started":
            self.clock -= took + 0.5  # the outcome record shares the intent's start


def _gate(name: str, database: str, failed: list[str] | None = None, evaluated: int = 5) -> dict[str, Any]:
    return {"gate": name, "database": database, "evaluated": evaluated, "failed": failed or [], "success": not failed}


def make_work_dir(work: Path) -> Path:
    """A work directory as the phases leave it: trail, snapshots, findings, conformance rows, Data Docs, a log."""
    for sub in ("snapshots", "reports", "logs", DATA_DOCS.parent):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / DATA_DOCS).write_text("<html><body>Data Docs</body></html>")
    apim_counts = {f"am_table_{i:03d}": i * 37 for i in range(200)}
    shared_counts = {f"reg_table_{i:02d}": i * 3 for i in range(12)}
    for role, db, counts in (("apim", "wso2_am_db", apim_counts), ("shared", "wso2_shared_db", shared_counts)):
        snap = Snapshot(database=db, db_schema="public", taken_at=T0, row_counts=counts, columns={}, indexes=[])
        snap.save(work / "snapshots" / f"{role}-source.json")
    (work / "reports" / "pre-migration-findings.csv").write_text(
        "name,version,provider,validator,message\n"
        "ShippingAPI4,2.0.0,elena,OpenAPI definition,attribute info is missing\n"
        'TicketsAPI17,1.0.0,admin@globex.com,OpenAPI definition,"Unexpected end-of-input, <expected> close"\n'
    )
    (work / "reports" / "conformance-440.csv").write_text(
        "database,kind,object,key,expected,actual,accepted\n"
        "wso2am_am,index_extra,am_api.my_custom_idx,index_extra:am_api.my_custom_idx,,btree (name),False\n"
        "wso2am_am,column_default,am_api.status,column_default:am_api.status,'CREATED',NULL,True\n"
    )
    log = work / "logs" / "api-pre-migration-20260301T090100.log"
    log.write_text("[2026-03-01] INFO - connecting with password=hunter2-secret\n")

    t = _Trail(work)
    am, shared = {"role": "apim", "source": "wso2_am_db", "target": "wso2am_am"}, {"target": "wso2am_shared"}
    t.add("run-1", "prepare-databases", "preflight", details={"findings": ["[ok] server version: 15"]})
    t.add("run-1", "prepare-databases", "check_conformance", details={"label": "source-400", "differences": 0})
    t.add("run-1", "prepare-databases", "snapshot_source", details={**am, "tables": 200, "total_rows": 736_300})
    t.add("run-1", "prepare-databases", "copy_database", "started", details=am)
    t.add("run-1", "prepare-databases", "copy_database", details=am)
    failure = "row count differs from the source snapshot: table_name=am_table_007, expected_rows=259, actual_rows=250"
    t.add(
        "run-1",
        "prepare-databases",
        "validate_copy",
        "failed",
        details={"role": "apim", "target": "wso2am_am", "mismatched_tables": ["am_table_007"], "error": COPY_ERROR},
        gates=[_gate("copy-apim", "wso2am_am", [failure])],
    )
    t.add("run-2", "prepare-databases", "copy_database", "started", details=am)
    t.add("run-2", "prepare-databases", "copy_database", details={**am, "rebuilt": True})
    t.add(
        "run-2",
        "prepare-databases",
        "validate_copy",
        details={**am, "mismatched_tables": []},
        gates=[_gate("copy-apim", "wso2am_am")],
    )
    t.add("run-2", "prepare-databases", "snapshot_source", details={"role": "shared", "source": "wso2_shared_db"})
    t.add("run-2", "prepare-databases", "copy_database", details={"role": "shared", **shared})
    t.add(
        "run-2",
        "prepare-databases",
        "validate_copy",
        details={"role": "shared", **shared, "mismatched_tables": []},
        gates=[_gate("copy-shared", "wso2am_shared")],
    )
    t.add("run-3", "prepare-databases", "copy_database", "skipped", details={**am, "reason": "already verified"})
    t.add("run-4", "api-pre-migration", "snapshot_targets", details={"apim_rows": 736_300, "shared_rows": 198})
    t.add("run-4", "api-pre-migration", "run_api_manager", took=40, details={"log_file": str(log), "exit_code": 0})
    t.add(
        "run-4",
        "api-pre-migration",
        "report_findings",
        details={
            "findings": 2,
            "accepted_present": ["ShippingAPI4:2.0.0:elena", "TicketsAPI17:1.0.0:admin@globex.com"],
            "blocking": [],
            "csv": "/srv/rehearsal-host/work/reports/pre-migration-findings.csv",  # the work dir moved since
            "password": "hunter2-secret",  # masked by the trail itself
        },
        gates=[{"gate": "pre-migration-findings", "failed": [], "success": True}],
    )
    for n, (frm, to, sha) in enumerate((("4.2.0", "4.3.0", SHA_43), ("4.3.0", "4.4.0", SHA_44))):
        t.add(
            "run-5",
            "schema-upgrade",
            "snapshot_target",
            details={"checkpoint": f"at-{frm}", "target": "wso2am_am", "tables": 200, "total_rows": 736_300 + n},
        )
        script = {"script": f"/srv/scripts/wso2am-{frm}-to-{to}.postgresql.sql", "sha256": sha, "statements": 5 + n}
        t.add(
            "run-5",
            "schema-upgrade",
            "apply_sql_script",
            details={**script, "from_version": frm, "to_version": to, "duration_ms": 90, "target": "wso2am_am"},
        )
        t.add("run-5", "schema-upgrade", "validate_script", gates=[_gate(f"after-{to}", "wso2am_am", evaluated=3)])
    t.add(
        "run-5",
        "schema-upgrade",
        "check_conformance",
        "failed",
        took=3,
        details={
            "label": "440",
            "differences": 2,
            "unaccepted": 1,
            "error": CONFORMANCE_ERROR,
            "csv": "/srv/rehearsal-host/work/reports/conformance-440.csv",
        },
        gates=[_gate("conformance-apim", "wso2am_am", ["difference not accepted: index_extra:am_api.my_custom_idx"])],
    )
    return work


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_work_dir(tmp_path_factory.mktemp("report") / "work")


@pytest.fixture(scope="module")
def report(work: Path) -> Path:
    return build_report(work)


def test_report_shows_the_run(work: Path, report: Path) -> None:
    assert report == work / "reports" / "report.html"
    page = report.read_text()
    assert f"Run report: {PLAN}" in page and "alice@ops-host" in page
    # The timeline is inline SVG: one bar per step run, each with its outcome and duration as a tooltip.
    timeline = re.search(
        r'<svg class="chart" [^>]*aria-label="Timeline of (\d+) step run\(s\) in 3 phase\(s\)"(.*?)</svg>', page
    )
    assert timeline, "no timeline chart"
    tips = re.findall(r"<rect [^>]*><title>([^<]*)</title></rect>", timeline[2])
    assert len(tips) == int(timeline[1]) >= 20
    assert any(t.startswith("prepare-databases/validate_copy: failed, 1.0 s") for t in tips)
    assert any(t.startswith("schema-upgrade/check_conformance: failed, 3.0 s") for t in tips)
    assert "elapsed (s) since 2026-03-01 09:00:00 UTC" in timeline[2]
    counts = re.search(
        r'<svg class="chart" [^>]*aria-label="Source vs copy rows of the 15 largest tables"(.*?)</svg>', page
    )
    assert counts and len(re.findall(r"<rect [^>]*><title>", counts[1])) == 2 * 15  # source and copy bars
    assert "apim: am_table_199: source snapshot 7,363 rows" in counts[1]
    assert "Audit chain intact" in page
    # Outcome: the unrepaired failure and its error; the repaired one is still listed.
    assert "Failed at schema-upgrade/check_conformance" in page and CONFORMANCE_ERROR.replace("'", "&#39;") in page
    assert "prepare-databases/validate_copy (seq 6)" in page and COPY_ERROR.replace("'", "&#39;") in page
    # Findings, from the CSV the record points to (found in its moved work dir), with their status.
    assert "ShippingAPI4" in page and "&lt;expected&gt; close" in page and "<expected>" not in page
    assert page.count('<span class="badge accepted">accepted</span>') == 2
    assert SHA_43 in page and SHA_44 in page and "wso2am-4.3.0-to-4.4.0.postgresql.sql" in page
    assert "conformance-440.csv</a>: 2 difference(s)" in page and "am_api.my_custom_idx" in page
    assert "All 212 tables" in page and "Source vs copy rows of the 15 largest tables" in page
    assert "No cutover in this run." in page
    assert "log of api-pre-migration" in page
    assert "hunter2" not in page  # masked in the trail; log contents are linked, never included


def test_tampered_trail_is_reported_broken(work: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(work, tmp_path / "work")
    trail = copy / "audit.jsonl"
    lines = trail.read_text().splitlines(keepends=True)
    lines[4] = lines[4].replace('"outcome":"succeeded"', '"outcome":"skipped"')
    trail.write_text("".join(lines))
    page = build_report(copy).read_text()
    assert "Audit chain BROKEN" in page and "Audit chain intact" not in page
    assert "line 5 (seq 5): content does not match its hash (edited)" in page
    # A line that is no record at all: still a report, on the lines that remain.
    trail.write_text("".join(lines[:8]) + "{not json\n" + "".join(lines[8:]))
    page = build_report(copy).read_text()
    assert "line 9: not a JSON audit record" in page and "Failed at schema-upgrade/check_conformance" in page


def test_failed_copy_shows_the_differing_tables(work: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(work, tmp_path / "work")
    trail = copy / "audit.jsonl"
    trail.write_text("".join(trail.read_text().splitlines(keepends=True)[:6]))  # a prefix is still a chain
    page = build_report(copy).read_text()
    assert "Audit chain intact" in page and "Failed at prepare-databases/validate_copy" in page
    assert "Tables whose copy differs or is unknown" in page
    assert re.search(r"<td>apim: am_table_007</td><td class=num>259</td><td class=num>250</td>", page)
    assert "not validated" in page  # the shared copy was never gated in this trail


def test_cutover_decisions_are_listed_and_escaped(tmp_path: Path) -> None:
    t = _Trail(tmp_path)
    no = {"decision": "reject", "by": "carol@cab", "reason": "wait for the <freeze> window"}
    t.add("run-8", "cutover", "approval", "rejected", details=no)
    page = build_report(tmp_path).read_text()
    assert "Rejected at cutover/approval" in page and "reject by carol@cab: wait for the &lt;freeze&gt; window" in page

    yes = {"decision": "approve", "by": "bob@cab", "reason": "<script>alert(1)</script> rehearsal green"}
    t.add("run-9", "cutover", "approval", details=yes)
    t.add("run-9", "cutover", "stop_control_plane_400", details={"node": "cp-400-1", "state": "stopped"})
    t.add("run-9", "cutover", "restart_gateways", "started", details={"groups": ["edge"]})
    page = build_report(tmp_path, tmp_path / "out" / "r.html").read_text()
    assert "carol@cab" in page and "bob@cab" in page and ">approve<" in page and ">reject<" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "No cutover in this run." not in page and "Cutover and rollback steps" in page and "cp-400-1" in page
    assert "Interrupted at cutover/restart_gateways" in page  # the rejection was answered by a later approval


def test_every_recorded_value_is_escaped_by_the_template(tmp_path: Path) -> None:
    """Plan, API, database and gate names come from the trail, the plan or the database: never markup."""
    evil = "<script>alert('x')</script>"
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "pre-migration-findings.csv").write_text(
        f"name,version,provider,validator,message\n{evil},1.0.0,bob,OpenAPI definition,{evil}\n"
    )
    audit.append_record(
        tmp_path / "audit.jsonl",
        plan=f"prod {evil}",
        plan_digest="ab" * 32,
        phase="schema-upgrade",
        step="apply_sql_script",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=1),
        outcome="failed",
        flow_run_id=evil,
        actor=evil,
        details={"script": f"/srv/{evil}.sql", "target": evil, "error": evil, "sha256": evil},
        gates=[_gate(evil, evil, [evil])],
    )
    page = build_report(tmp_path).read_text()
    assert "<script" not in page
    assert "<title>Run report: prod &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</title>" in page
    assert page.count("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") >= 10
    assert "<td>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</td><td>1.0.0</td>" in page  # the API name
    assert _parse(page).headings[:3] == ["Summary", "Timeline", "Quality gates"]  # the page structure survived


def test_report_command_takes_a_work_dir_its_trail_or_the_plan(work: Path, tmp_path: Path) -> None:
    assert report_command(work) == work / "reports" / "report.html"
    assert report_command(work / "audit.jsonl") == work / "reports" / "report.html"
    pairs = {
        role: {"source": f"{role}_src", "target": f"{role}_copy", "owner": "wso2_apim"} for role in ("apim", "shared")
    }
    plan = {"name": PLAN, "work_dir": str(work), "databases": pairs}
    (tmp_path / "plan.toml").write_text(tomli_w.dumps(plan))
    assert report_command(tmp_path / "plan.toml") == work / "reports" / "report.html"
    assert report_command(tmp_path) == work / "reports" / "report.html"  # a sandbox directory holding plan.toml
    with pytest.raises(AuditError, match="no audit trail here"):
        build_report(tmp_path / "nowhere")


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()
        self.imgs: list[dict[str, str | None]] = []
        self.svgs: list[tuple[dict[str, str | None], list[str]]] = []  # attributes, the tags inside
        self._svg_depth = 0
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("href", "src") and v is not None]
        self.ids |= {v for k, v in attrs if k == "id" and v}
        self.imgs += [a] if tag == "img" else []
        if self._svg_depth:
            self.svgs[-1][1].append(tag)
        elif tag == "svg":
            self.svgs.append((a, []))
        self._svg_depth += tag == "svg"
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag: str) -> None:
        self._svg_depth -= tag == "svg" and self._svg_depth > 0

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def _parse(page: str) -> _Refs:
    refs = _Refs()
    refs.feed(page)
    return refs


def test_every_link_resolves_and_every_image_is_embedded(report: Path) -> None:
    refs = _parse(report.read_text())
    assert len(refs.refs) >= 10
    for ref in refs.refs:
        parts = urlsplit(ref)
        assert parts.scheme in ("", "data"), f"external or absolute link: {ref}"
        if parts.scheme == "data":
            meta, payload = ref[5:].split(",", 1)
            assert meta == "image/png;base64"
            assert base64.b64decode(payload, validate=True).startswith(b"\x89PNG\r\n\x1a\n")
        elif ref.startswith("#"):
            assert ref[1:] in refs.ids, f"anchor without a target: {ref}"
        else:
            assert not parts.netloc and not ref.startswith("/"), ref
            assert (report.parent / unquote(parts.path)).resolve().is_file(), f"broken link: {ref}"
    linked = {unquote(r) for r in refs.refs}
    assert {"../gx/uncommitted/data_docs/local_site/index.html", "../audit.jsonl"} <= linked
    assert "../logs/api-pre-migration-20260301T090100.log" in linked


def _chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        return subprocess.run(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed")
def test_renders_in_headless_chromium(work: Path, report: Path) -> None:
    shot = work / "reports" / "report.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1400,2000", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    header = shot.read_bytes()[:24]
    assert header.startswith(b"\x89PNG\r\n\x1a\n") and struct.unpack(">II", header[16:24]) == (1400, 2000)
    assert shot.stat().st_size > 30_000  # a rendered page, not a blank one

    dom = _chromium("--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    refs = _parse(dom.stdout)
    assert all(h in refs.headings for h in SECTIONS), refs.headings
    timeline = [(a, inside) for a, inside in refs.svgs if (a.get("aria-label") or "").startswith("Timeline of")]
    assert len(timeline) == 1
    attrs, inside = timeline[0]
    bars = int((attrs["aria-label"] or "").split()[2])
    assert bars >= 20 and inside.count("rect") > bars and inside.count("text") > bars  # bars, bands, labels


def test_report_needs_no_plotting_library(work: Path, tmp_path: Path) -> None:
    """The report is built after every run: its charts are written as SVG, without importing matplotlib."""
    copy = shutil.copytree(work, tmp_path / "work")
    code = (
        "import sys; from pathlib import Path; from apim_upgrade.proof.report import build_report; "
        f"build_report(Path({str(copy)!r})); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'PIL', 'numpy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    assert '<svg class="chart"' in (copy / "reports" / "report.html").read_text()


def test_chart_text_is_escaped_and_unknown_outcomes_get_a_legend() -> None:
    bars = [
        Bar("<phase&>", "step\"'<x>", T0, T0 + timedelta(seconds=5), "succeeded"),
        Bar("<phase&>", "other", T0 + timedelta(seconds=5), T0 + timedelta(hours=1), "paused"),
    ]
    svg = timeline_svg(bars, 'Timeline "<all>"')
    assert "<x>" not in svg and "<phase&>" not in svg and "&lt;phase&amp;&gt;" in svg
    assert 'aria-label="Timeline &quot;&lt;all&gt;&quot;"' in svg
    assert "elapsed (min) since" in svg  # an hour-long run is drawn in minutes
    assert ">paused</text>" in svg  # a legend entry for an outcome the chart has no colour for
    assert "&lt;phase&amp;&gt;/other: paused, 3595.0 s" in svg
    counts = row_counts_svg([TableCount("a<b", 10, None), TableCount("c", 5, 5)], "rows")
    assert "a&lt;b: copy ? rows" in counts and "10 → ?" in counts and "a<b" not in counts
