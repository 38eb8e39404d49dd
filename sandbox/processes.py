"""Find this host's sandbox processes by what their command line names (read from /proc)."""

from __future__ import annotations

from pathlib import Path


def processes_of(module: str, option: str, directory: Path) -> list[int]:
    """Pids of ``python -m <module>`` processes whose ``<option> PATH`` lies inside ``directory``."""
    inside = directory.resolve()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue  # gone meanwhile
        if module not in args or option not in args:
            continue
        at = args.index(option) + 1
        if at < len(args) and args[at] and Path(args[at]).resolve().is_relative_to(inside):
            pids.append(int(proc.name))
    return pids
