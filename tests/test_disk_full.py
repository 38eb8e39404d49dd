"""A full disk and a damaged trail: one FAILED line, no partial record, `audit repair`, then a resume."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apim_upgrade.plan import load_plan
from apim_upgrade.proof import audit

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _failed(out: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("FAILED:")]


def test_a_torn_or_edited_trail_is_rebuilt_from_its_database_copy(make_sandbox: Callable[..., Path]) -> None:
    plan_path = make_sandbox()
    assert _cli("run", str(plan_path), "--phase", "prepare-databases").returncode == 0
    trail = load_plan(plan_path).audit_path
    good = trail.read_bytes()
    records = len(audit.read_records(trail))

    # A crash mid-append: 94 bytes of a record and no newline. The next append rolls it back.
    trail.write_bytes(good + good.splitlines(keepends=True)[-1][:94])
    assert _cli("audit", "verify", str(trail.parent)).returncode == 5
    rerun = _cli("run", str(plan_path), "--phase", "prepare-databases")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert audit.verify_chain(trail) == [] and len(audit.read_records(trail)) > records

    # Records lost from the middle of the file (a bad restore, an editor): the database copy rebuilds it.
    lines = trail.read_bytes().splitlines(keepends=True)
    trail.write_bytes(b"".join(lines[:3] + lines[5:]))
    verify = _cli("audit", "verify", str(trail.parent))
    assert verify.returncode == 5 and "removed, inserted or reordered" in verify.stderr
    repaired = _cli("audit", "repair", str(plan_path))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"rebuilt from {len(lines)} record(s)" in repaired.stdout and "damaged file is kept" in repaired.stdout
    assert trail.read_bytes() == b"".join(lines)
    assert _cli("audit", "verify", "--plan", str(plan_path)).returncode == 0
    assert list(trail.parent.glob("audit.jsonl.damaged-*"))


@contextlib.contextmanager
def _small_filesystem(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mount.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


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
    with _small_filesystem(mount, "80m"):
        text = plan_path.read_text()
        plan_path.write_text(text.replace('work_dir = "work"', f'work_dir = "{mount / "work"}"'))
        trail = load_plan(plan_path).audit_path
        filler = mount / "filler"
        stop = threading.Event()
        watcher = threading.Thread(target=_fill_when, args=(trail, step, filler, stop), daemon=True)
        watcher.start()
        out = _cli("run", str(plan_path), "--phase", "prepare-databases")
        stop.set()
        watcher.join(10)
        assert filler.exists(), f"the run never reached {step}"
        assert out.returncode == 11, out.stdout + out.stderr
        failed = _failed(out)
        assert len(failed) == 1 and "no space left on the device writing " in failed[0], out.stdout + out.stderr
        assert "Traceback" not in out.stderr and out.stderr.count("\n") < 40, out.stderr
        assert audit.verify_chain(trail) == []  # no partial record

        filler.unlink()  # the operator frees space and reruns
        rerun = _cli("run", str(plan_path), "--phase", "prepare-databases")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert audit.verify_chain(trail) == []
        assert _cli("audit", "verify", "--plan", str(plan_path)).returncode == 0
