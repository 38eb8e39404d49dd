"""Every file the product writes is written whole or not at all.

A unique temporary file in the destination's directory is written, flushed and fsynced,
then renamed over the destination (``os.replace``), and the directory is fsynced so the
rename survives a crash. A reader sees the old file or the whole new one, never half of
one; a write that fails (a full disk, a crash) leaves the destination as it was and no
temporary file behind (a crash leaves ``.NAME.*.tmp``, which no reader opens). A full
disk raises :class:`DiskFull` naming the destination and the space it needed.

Appends are another matter: the audit trail appends whole lines or cuts them back off
(``proof/audit.py``).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from apim_upgrade.errors import DiskFull

# Raised (sys.audit) once the temporary file holds all its bytes, before the rename: a test
# hook can stop the process exactly there and find the destination untouched.
WRITE_EVENT = "apim_upgrade.atomic_write"
_CHUNK = 1 << 20


@contextmanager
def replacing(path: Path, *, mode: int | None = None, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it is fsynced and renamed over ``path``.

    ``mode``: the file's permissions, set before any byte is written (secrets are never
    readable by others, not even for a moment). ``needed``: bytes, for the DiskFull message.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.fchmod(fd, mode if mode is not None else _default_mode(path))
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        sys.audit(WRITE_EVENT, str(path), str(tmp))  # a no-op unless a test hooks it
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise DiskFull.writing(path, needed) from None
        raise


def write_atomically(path: Path, data: str | bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` whole or not at all; returns ``path``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(path, mode=mode, needed=len(raw)) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(raw)
    return Path(path)


def copy_atomically(source: Path, dest: Path) -> Path:
    """``shutil.copy2`` (contents, mode, times) that never leaves half a copy at ``dest``."""
    size = Path(source).stat().st_size
    with replacing(dest, needed=size) as tmp:
        with open(source, "rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
        shutil.copystat(source, tmp)
    return Path(dest)


def copy_tree_atomically(source: Path, dest: Path) -> Path:
    """Copy a folder so that ``dest`` appears whole or not at all (copied beside it, then renamed).

    ``dest`` must not exist (as with ``shutil.copytree``); a leftover of a killed copy is
    only ever the hidden ``.NAME.*.tmp`` folder beside it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        shutil.copytree(source, staging / "tree", symlinks=True)
        for folder, _dirs, files in os.walk(staging / "tree"):
            for name in files:
                file = Path(folder) / name
                if not file.is_symlink():
                    with open(file, "rb") as fh:
                        os.fsync(fh.fileno())
        os.rename(staging / "tree", dest)  # refuses an existing non-empty folder, like copytree
        _fsync_directory(dest.parent)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull.writing(dest) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _default_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the old file's, else 0o666 less the umask."""
    with suppress(OSError):
        return path.stat().st_mode & 0o7777
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread, for a moment)."""
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
