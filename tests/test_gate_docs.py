"""Data Docs are rendered once per phase, not per gate, and still show every validation result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from apim_upgrade.postgres import db
from apim_upgrade.proof import gates
from apim_upgrade.proof.gates import Expectation, GateSpec, QueryAsset, build_pending_data_docs, run_gate

SITE = Path("uncommitted", "data_docs", "local_site")


def _gate(name: str, max_value: int) -> GateSpec:
    """Three rows (1, 2, 3) computed by the server; passes when ``max_value`` >= 3."""
    asset = QueryAsset(
        name="numbers",
        query="SELECT generate_series(1, 3) AS n",
        expectations=[
            Expectation(
                "n within bounds",
                "ExpectColumnValuesToBeBetween",
                {"column": "n", "min_value": 1, "max_value": max_value},
            )
        ],
    )
    return GateSpec(name=name, database="postgres", assets=[asset])


def _pages(root: Path, suite: str) -> list[Path]:
    # GX stores suite "gate-a__numbers" under validations/gate-a__numbers/<run>/<time>/<batch>.html (no dots:
    # a dotted suite name would become nested folders)
    return list((root / SITE / "validations" / suite).rglob("*.html"))


def test_gates_defer_data_docs_until_the_phase_builds_them(pg: db.PgServer, tmp_path: Path) -> None:
    root = tmp_path / "gx"
    first, second = run_gate(root, pg, _gate("gate-a", 3)), run_gate(root, pg, _gate("gate-b", 3))
    assert first.success and second.success
    index = root / SITE / "index.html"
    assert not index.exists(), "a passing gate must not render Data Docs by itself"
    assert first.docs_index == second.docs_index == index.resolve().as_uri()  # the link is known before the build

    build_pending_data_docs(root)
    # The root is GX's context directory itself: no second "gx" folder inside it (work/gx/gx/...).
    assert (root / "great_expectations.yml").is_file() and not (root / "gx").exists()
    text = index.read_text()
    for suite in ("gate-a__numbers", "gate-b__numbers"):
        assert _pages(root, suite), f"no validation page for {suite}"
        assert suite in text, f"the index does not list {suite}"
    build_pending_data_docs(root)  # nothing pending: a no-op, and the docs stay
    assert index.read_text() == text

    # Results of a later phase are added to the same index; earlier ones stay listed.
    run_gate(root, pg, _gate("gate-c", 3))
    build_pending_data_docs()
    text = index.read_text()
    assert all(s in text for s in ("gate-a__numbers", "gate-b__numbers", "gate-c__numbers"))
    assert _pages(root, "gate-c__numbers")


def test_a_failed_gate_renders_its_data_docs_at_once(pg: db.PgServer, tmp_path: Path) -> None:
    root = tmp_path / "gx"
    passed = run_gate(root, pg, _gate("gate-ok", 3))
    failed = run_gate(root, pg, _gate("gate-bad", 2))
    assert passed.success and not failed.success
    assert failed.failures == ["n within bounds: " + failed.outcomes[0].detail]
    # The GateFailed message links to Data Docs: they must be there without waiting for the phase end,
    # including the pages of the gates that passed before it.
    text = (root / SITE / "index.html").read_text()
    for suite in ("gate-ok__numbers", "gate-bad__numbers"):
        assert _pages(root, suite) and suite in text


def test_pages_left_by_a_killed_run_are_rendered_by_the_next_build(
    pg: db.PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "gx"
    run_gate(root, pg, _gate("gate-x", 3))
    pending = root / "uncommitted" / "apim-upgrade-pending-data-docs.jsonl"
    with pending.open("a") as out:
        out.write('["ValidationResultIdentifier", ["gate-x", "numb')  # the killed process's half-written line
    monkeypatch.setattr(gates, "_PENDING_ROOTS", set())  # a new process: it knows nothing of the last one
    build_pending_data_docs()
    assert not (root / SITE / "index.html").exists()  # nothing ran here yet, nothing is built

    run_gate(root, pg, _gate("gate-y", 3))
    build_pending_data_docs()
    text = (root / SITE / "index.html").read_text()
    for suite in ("gate-x__numbers", "gate-y__numbers"):
        assert _pages(root, suite) and suite in text
    assert not pending.exists()  # everything listed was rendered


def test_a_project_nested_by_an_earlier_release_is_moved_up(
    pg: db.PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work directories written before the fix hold GX's project in gx/gx/: it is adopted, results and all."""
    root = tmp_path / "gx"
    run_gate(root, pg, _gate("gate-old", 3))
    build_pending_data_docs(root)
    nested = root / "gx"
    nested.mkdir()
    for entry in [e for e in root.iterdir() if e != nested]:
        entry.rename(nested / entry.name)  # the layout an earlier release left
    monkeypatch.setattr(gates, "_CONTEXTS", {})  # a new process
    monkeypatch.setattr(gates, "_DATASOURCES", {})

    run_gate(root, pg, _gate("gate-new", 3))
    build_pending_data_docs(root)
    assert not nested.exists() and (root / "great_expectations.yml").is_file()
    text = (root / SITE / "index.html").read_text()
    for suite in ("gate-old__numbers", "gate-new__numbers"):
        assert _pages(root, suite) and suite in text


def test_a_phase_without_gates_does_not_import_gx() -> None:
    """The phase-end hook of a rerun that gated nothing (verified copies) must not pay GX's import."""
    code = (
        "import sys; from apim_upgrade.proof.gates import build_pending_data_docs; build_pending_data_docs(); "
        "print('great_expectations' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
