"""A full disk and a damaged trail: one FAILED line, no partial record, `audit repair`, then a resume."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from apim_upgrade.plan import load_plan
from apim_upgrade.proof import audit
from tests.cli import failed_lines, run_cli
from tests.filesystems import small_filesystem


def test_a_torn_or_edited_trail_is_rebuilt_from_its_database_copy(make_sandbox: Callable[..., Path]) -> None:
    plan_path = make_sandbox()
    assert run_cli("run", str(plan_path), "--phase", "prepare-databases", timeout=600).returncode == 0
    trail = load_plan(plan_path).audit_path
    good = trail.read_bytes()
    records = len(audit.read_records(trail))

    # A crash mid-append: 94 bytes of a record and no newline. The next append rolls it back.
    trail.write_bytes(good + good.splitlines(keepends=True)[-1][:94])
    assert run_cli("audit", "verify", str(trail.parent), timeout=600).returncode == 5
    rerun = run_cli("run", str(plan_path), "--phase", "prepare-databases", timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert audit.verify_chain(trail) == [] and len(audit.read_records(trail)) > records

    # Records lost from the middle of the file (a bad restore, an editor): the database copy rebuilds it.
    lines = trail.read_bytes().splitlines(keepends=True)
    trail.write_bytes(b"".join(lines[:3] + lines[5:]))
    verify = run_cli("audit", "verify", str(trail.parent), timeout=600)
    assert verify.returncode == 5 and "removed, inserted or reordered" in verify.stderr
    repaired = run_cli("audit", "repair", str(plan_path), timeout=600)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"rebuilt from {len(lines)} record(s)" in repaired.stdout and "damaged file is kept" in repaired.stdout
    assert trail.read_bytes() == b"".join(lines)
    assert run_cli("audit", "verify", "--plan", str(plan_path), timeout=600).returncode == 0
    assert list(trail.parent.glob("audit.jsonl.damaged-*"))


def _fill_when(trail: Path, step: str, filler: Path, stop: threading.Event) -> None:
    """Once ``step`` has a record in the trail, fill the filesystem to its last byte."""
    while not stop.is_set():
        if trail.exists() and f'"step":"{step}"' in trail.read_text(errors="replace"):
            with open(filler, "wb") as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
            return
        time.sleep(0.05)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
@pytest.mark.parametrize(
    "step", ["snapshot_source", "copy_database", "validate_copy"], ids=["at-snapshot", "at-copy", "at-gate"]
)
def test_a_disk_that_fills_mid_run_fails_in_one_line_and_resumes(
    make_sandbox: Callable[..., Path], tmp_path: Path, step: str
) -> None:
    plan_path = make_sandbox()
    mount = tmp_path / "small"
    with small_filesystem(mount, "80m"):
        text = plan_path.read_text()
        plan_path.write_text(text.replace('work_dir = "work"', f'work_dir = "{mount / "work"}"'))
        trail = load_plan(plan_path).audit_path
        filler = mount / "filler"
        stop = threading.Event()
        watcher = threading.Thread(target=_fill_when, args=(trail, step, filler, stop), daemon=True)
        watcher.start()
        out = run_cli("run", str(plan_path), "--phase", "prepare-databases", timeout=600)
        stop.set()
        watcher.join(10)
        assert filler.exists(), f"the run never reached {step}"
        assert out.returncode == 11, out.stdout + out.stderr
        failed = failed_lines(out)
        assert len(failed) == 1 and "no space left on the device writing " in failed[0], out.stdout + out.stderr
        assert "Traceback" not in out.stderr and out.stderr.count("\n") < 40, out.stderr
        assert audit.verify_chain(trail) == []  # no partial record

        filler.unlink()  # the operator frees space and reruns
        rerun = run_cli("run", str(plan_path), "--phase", "prepare-databases", timeout=600)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert audit.verify_chain(trail) == []
        assert run_cli("audit", "verify", "--plan", str(plan_path), timeout=600).returncode == 0
