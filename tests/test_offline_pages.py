"""Every page the product writes renders completely with no network: Data Docs and the run report.

Each page is opened in headless Chromium that can reach nothing (every host name fails to
resolve, every proxied request goes to a closed port); the DOM is read after scripts ran.
"""

from __future__ import annotations

import re
import struct
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from apim_upgrade.postgres import db
from apim_upgrade.proof.data_docs_offline import offline_page
from apim_upgrade.proof.gates import DATA_DOCS_SITE, build_pending_data_docs, run_gate
from apim_upgrade.proof.report import build_report
from tests.test_gate_docs import _gate
from tests.test_report import SECTIONS, make_work_dir

CHROMIUM = Path("/usr/bin/chromium")
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", *OFFLINE]
FLAGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is missing")


def _chromium(*args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="offline-chromium-") as profile:
        done = subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _screenshot(page: Path, shot: Path, height: int = 1200) -> None:
    _chromium(f"--screenshot={shot}", f"--window-size=1400,{height}", page.as_uri())
    header = shot.read_bytes()[:24]
    assert header.startswith(b"\x89PNG\r\n\x1a\n") and struct.unpack(">II", header[16:24]) == (1400, height)


class _Loads(HTMLParser):
    """What a page makes the browser fetch (scripts, stylesheets, images, CSS urls), and its table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.rows: dict[str, int] = {}  # table id -> rows in its tbody
        self._table: str | None = None
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img") and a.get("src"):
            self.loads.append(a["src"] or "")
        if tag == "link" and a.get("rel") in ("stylesheet", "shortcut icon", "icon"):
            self.loads.append(a.get("href") or "")
        if tag == "table":
            self._table = a.get("id") or ""
            self.rows.setdefault(self._table, 0)
        if tag == "tr" and self._table is not None:
            self.rows[self._table] += 1
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._table = None if tag == "table" else self._table
        self._in_style = False if tag == "style" else self._in_style

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.loads += re.findall(r"url\(['\"]?([^'\")]+)", data)


def _parse(text: str) -> _Loads:
    parsed = _Loads()
    parsed.feed(text)
    return parsed


def _assert_all_local(page: Path, text: str) -> None:
    for ref in _parse(text).loads:
        assert not re.match(r"(https?:)?//", ref), f"{page.name} loads {ref} from the network"
        if not ref.startswith("data:"):
            target = (page.parent / ref.split("?")[0]).resolve()
            assert target.is_file(), f"{page.name} loads {ref}, which is not there"


@pytest.fixture(scope="module")
def site(pg: db.PgServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("offline") / "gx"
    assert run_gate(root, pg, _gate("copy-apim", 3), run_name="prepare-databases-validate_copy").success
    assert not run_gate(root, pg, _gate("after-4.3.0", 2), run_name="schema-upgrade-validate_script").success
    build_pending_data_docs(root)
    return root / DATA_DOCS_SITE


def test_data_docs_load_nothing_from_the_network(site: Path) -> None:
    pages = sorted(p for p in site.rglob("*.html") if "static" not in p.relative_to(site).parts)
    assert len(pages) == 5  # the index, two suites, two validation results
    for page in pages:
        _assert_all_local(page, page.read_text())
    # Dotted gate names stay one folder; runs are named after their step, not GX's "__none__".
    validations = {p.relative_to(site / "validations").parts[:2] for p in site.glob("validations/**/*.html")}
    assert validations == {
        ("copy-apim__numbers", "prepare-databases-validate_copy"),
        ("after-4_3_0__numbers", "schema-upgrade-validate_script"),
    }
    assert (site / "static" / "vendor" / "fontawesome" / "LICENSE.txt").is_file()  # shipped with the fonts


@needs_chromium
def test_data_docs_index_renders_offline(site: Path, tmp_path: Path) -> None:
    index = site / "index.html"
    _screenshot(index, tmp_path / "index.png")
    dom = _chromium("--dump-dom", index.as_uri())
    rows = _parse(dom).rows
    results, suites = (rows[k] for k in sorted(k for k in rows if k.endswith("-body-table")))
    assert (results, suites) == (3, 3)  # a header and two rows each
    body = dom.split("</thead>", 1)[1]
    for text in ("schema-upgrade-validate_script", "prepare-databases-validate_copy", "after-4_3_0__numbers"):
        assert text in body
    assert "ge-failed-icon" in body and "ge-success-icon" in body
    # Bootstrap's JavaScript ran (local copy): the tabs switch, so "Expectation Suites" is a working tab.
    assert 'id="Expectation-Suites-tab"' in dom and "Clear Filters" not in dom


@needs_chromium
def test_validation_page_renders_offline(site: Path, tmp_path: Path) -> None:
    page = next(site.glob("validations/after-4_3_0__numbers/*/*/*.html"))
    _screenshot(page, tmp_path / "validation.png")
    dom = _chromium("--dump-dom", page.as_uri())
    assert "Unsuccessful Expectations" in dom and "values must be greater than or equal to" in dom
    assert "schema-upgrade-validate_script" in dom  # the run's name, in the breadcrumbs


@needs_chromium
def test_font_awesome_and_bootstrap_apply_offline(site: Path) -> None:
    """Computed styles prove the local stylesheets loaded (a missing one leaves browser defaults)."""
    probe = site / "probe.html"
    page = (site / "index.html").read_text()
    script = (
        "<script>window.addEventListener('load', () => {"
        "const i = document.querySelector('.fa-check-circle'), n = document.querySelector('.nav-tabs');"
        "document.body.setAttribute('data-probe', getComputedStyle(i, '::before').fontFamily + '|' +"
        " getComputedStyle(n).borderBottomStyle + '|' + (typeof jQuery) + '|' + (typeof jQuery.fn.tab));"
        "});</script></body>"
    )
    probe.write_text(page.replace("</body>", script))
    try:
        dom = _chromium("--dump-dom", "--virtual-time-budget=3000", probe.as_uri())
    finally:
        probe.unlink()
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the probe did not run"
    font, border, jquery, tab = found[1].split("|")
    assert "Font Awesome" in font and border == "solid" and jquery == "function" and tab == "function"


@needs_chromium
def test_report_renders_offline(tmp_path: Path) -> None:
    work = make_work_dir(tmp_path / "work")
    report = build_report(work)
    _assert_all_local(report, report.read_text())
    _screenshot(report, tmp_path / "report.png", 2000)
    dom = _chromium("--dump-dom", report.as_uri())
    headings = re.findall(r"<h2[^>]*>([^<]*)</h2>", dom)
    assert all(h in headings for h in SECTIONS), headings


def test_an_unknown_cdn_is_left_for_the_test_to_find() -> None:
    """A GX upgrade that adds a CDN asset must not be silently dropped: the page keeps it and the test above fails."""
    page = '<head><script src="https://cdn.example.org/new.js"></script><script src="https://code.jquery.com/jquery-3.7.1.min.js"></script></head>'
    out = offline_page(page, "../")
    assert "https://cdn.example.org/new.js" in out and '<script src="../static/vendor/jquery/jquery.min.js">' in out
