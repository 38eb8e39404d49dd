"""The hash-chained audit trail detects edits, removals and reordering; no secrets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest
import tomli_w

from apim_upgrade.proof import audit
from commands.cli import main


def _trail(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "audit.jsonl"
    for i in range(n):
        audit.append_record(
            path,
            plan="p",
            plan_digest="d" * 64,
            phase="prepare-databases",
            step=f"step{i}",
            started_at=datetime.now(UTC),
            ended_at=datetime.now(UTC),
            outcome="succeeded",
            inputs={"i": i},
            details={"password": "hunter2", "n": i},
            actor="tester",
        )
    return path


def test_chain_intact_and_secrets_masked(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    assert audit.verify_chain(path) == []
    text = path.read_text()
    assert "hunter2" not in text
    records = audit.read_records(path)
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert records[0].prev_sha256 == audit.GENESIS
    assert all(b.prev_sha256 == a.sha256 for a, b in pairwise(records))


def test_edited_line_detected(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"succeeded"', '"failed"')
    path.write_text("\n".join(lines) + "\n")
    problems = audit.verify_chain(path)
    assert any("line 2" in p and "edited" in p for p in problems)


def test_removed_line_detected(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    lines = path.read_text().splitlines()
    del lines[1]
    path.write_text("\n".join(lines) + "\n")
    problems = audit.verify_chain(path)
    assert any("removed, inserted or reordered" in p for p in problems)


def test_reordered_lines_detected(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    lines = path.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("\n".join(lines) + "\n")
    assert len(audit.verify_chain(path)) >= 2


def test_rehashed_forgery_still_breaks_the_chain(tmp_path: Path) -> None:
    """An editor who recomputes the edited line's own hash still breaks the next link."""
    path = _trail(tmp_path)
    lines = path.read_text().splitlines()
    body = json.loads(lines[1])
    body.pop("sha256")
    body["outcome"] = "skipped"
    body["sha256"] = audit._record_hash(body)
    lines[1] = audit.canonical(body)
    path.write_text("\n".join(lines) + "\n")
    problems = audit.verify_chain(path)
    assert any("line 3" in p for p in problems)


def test_cli_verify_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _trail(tmp_path)
    assert main(["audit", "verify", str(tmp_path)]) == 0
    assert "4 record(s), hash chain intact" in capsys.readouterr().out
    path.write_text(path.read_text().replace('"step2"', '"stepX"'))
    assert main(["audit", "verify", str(path)]) == 5
    assert "does not verify" in capsys.readouterr().err


def test_cli_history_prints_a_plain_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _trail(tmp_path)
    pairs = {role: {"source": f"{role}_src", "target": f"{role}_copy", "owner": "o"} for role in ("apim", "shared")}
    plan = tmp_path / "plan.toml"
    plan.write_text(tomli_w.dumps({"name": "p", "work_dir": str(tmp_path), "databases": pairs}))
    assert main(["history", str(plan)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "\x1b[" not in "\n".join(lines)  # captured output is no terminal: no colour codes
    header = next(line for line in lines if "started (UTC)" in line)
    assert header.split() == [
        "seq", "started", "(UTC)", "phase", "step", "database", "outcome", "took", "actor", "run", "note"
    ]  # fmt: skip
    rows = [line.split() for line in lines if "prepare-databases" in line]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"] and all("tester" in r and "succeeded" in r for r in rows)
    assert lines[-1] == "hash chain: intact"

    # A decision shows what was decided and by whom; a failure its error.
    for step, outcome, details in (
        ("approval", "rejected", {"decision": "reject", "by": "alice", "reason": "window moved"}),
        ("validate_copy", "failed", {"error": "quality gate 'copy-apim' failed (1 expectation(s))"}),
    ):
        now = datetime.now(UTC)
        audit.append_record(
            tmp_path / "audit.jsonl", plan="p", plan_digest="d" * 64, phase="cutover", step=step,
            started_at=now, ended_at=now, outcome=outcome, details=details, actor="ops",
        )  # fmt: skip
    assert main(["history", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "reject by alice: window moved" in out
    assert "quality gate 'copy-apim' failed (1 expectation(s))" in out
