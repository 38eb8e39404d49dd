"""Files the product writes are whole or absent: killed before the rename, or out of space mid-write."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from apim_upgrade.errors import DiskFull
from apim_upgrade.runtime.atomic import copy_atomically, write_atomically
from apim_upgrade.wso2 import config_render, distribution, findings
from tests.filesystems import small_filesystem

ROOT = Path(__file__).resolve().parents[1]
BIG = 2 * 1024 * 1024  # twice the small filesystem below: a write must run out of space halfway

# A child process that renders a deployment.toml over an existing one and is SIGKILLed once the
# temporary file holds every byte, just before the rename (the product's audit event marks the spot).
KILLED_RENDER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from apim_upgrade.runtime.atomic import WRITE_EVENT
    from apim_upgrade.wso2.config_render import write_toml

    def hook(event, args):
        if event == WRITE_EVENT:
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)
    write_toml({"server": {"hostname": "new-host"}, "padding": {"text": "x" * 200000}}, Path(sys.argv[1]))
    """
)


def test_a_render_killed_before_its_rename_leaves_the_old_file_whole(tmp_path: Path) -> None:
    conf = tmp_path / "repository/conf/deployment.toml"
    config_render.write_toml({"server": {"hostname": "old-host"}}, conf)
    before = conf.read_bytes()
    child = subprocess.run([sys.executable, "-c", KILLED_RENDER, str(conf)], cwd=ROOT, capture_output=True)
    assert child.returncode == -9, child.stderr.decode()
    assert conf.read_bytes() == before  # the old file, whole: never the new one cut short
    leftovers = list(conf.parent.glob(".deployment.toml.*.tmp"))  # hidden: no reader opens it
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 200000
    # The rerun writes the whole new file over it.
    config_render.write_toml({"server": {"hostname": "new-host"}}, conf)
    assert tomllib.loads(conf.read_text())["server"]["hostname"] == "new-host"


def _render(dest: Path, outside: Path) -> None:
    config_render.write_toml({"server": {"hostname": "h"}, "padding": {"text": "x" * BIG}}, dest)


def _keystore(dest: Path, outside: Path) -> None:
    big = outside / dest.name
    big.write_bytes(os.urandom(BIG))
    distribution.replace_keystores(dest.parents[3], [big])


def _findings(dest: Path, outside: Path) -> None:
    many = [findings.Finding(f"api{i}", "1.0", "admin", "OAS3", "x" * 200) for i in range(BIG // 200)]
    findings.write_csv(many, dest)


WRITERS: dict[str, tuple[str, Callable[[Path, Path], None]]] = {
    "rendered-toml": ("repository/conf/deployment.toml", _render),
    "keystore": ("repository/resources/security/tls-keystore.jks", _keystore),
    "findings-csv": ("reports/pre-migration-findings.csv", _findings),
}


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_full_disk_mid_write_leaves_the_old_file_and_names_the_path(tmp_path: Path, writer: str) -> None:
    rel, write = WRITERS[writer]
    with small_filesystem(tmp_path / "small", "1m") as small:
        dest = small / rel
        dest.parent.mkdir(parents=True)
        dest.write_bytes(b"the previous, whole file\n")
        with pytest.raises(DiskFull) as err:
            write(dest, tmp_path)
        assert str(dest) in str(err.value) and "no space left" in str(err.value)
        assert dest.read_bytes() == b"the previous, whole file\n"  # never half of the new one
        assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temporary file left behind
        assert not list(small.rglob("*.tmp"))


def test_modes_and_copies(tmp_path: Path) -> None:
    secret = write_atomically(tmp_path / "sandbox.env", "export A='b'\n", mode=0o600)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    write_atomically(secret, "export A='c'\n")  # a rewrite keeps the file's mode
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text() == "export A='c'\n"
    source = tmp_path / "driver.jar"
    source.write_bytes(b"jar")
    source.chmod(0o640)
    copy = copy_atomically(source, tmp_path / "lib" / "driver.jar")
    assert copy.read_bytes() == b"jar" and stat.S_IMODE(copy.stat().st_mode) == 0o640
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
