"""Runs ``bin/api-manager.sh`` of a WSO2 home: one wrapper for every JVM run.

The server keeps running after a ``-Dmigrate`` run, so success is decided
by console markers, not by an exit code: the run is done when the server-up
line ``WSO2 Carbon started in N sec`` appears, it succeeded when the step's
own completion lines appeared and no ERROR line did. Then the server is
shut down and its whole process group is gone — also on timeout, on
cancellation and when the server dies early. Console lines are streamed to
a callback and a log file; only a bounded tail and a bounded list of error
lines are kept in memory.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.runtime.process import ProcessFailed, Supervised, group_alive, terminate_group

SERVER_UP = re.compile(r"WSO2 Carbon started in (\d+) sec")
ERROR_LINE = re.compile(r"^\[[0-9: ,-]+\]\s+(ERROR|FATAL)\s+-\s+(.*)$")
# Messages that mean failure even when not logged at ERROR level.
KNOWN_FAILURES = (
    re.compile(r"Migration client not found"),
    re.compile(r"Migration process was stopped"),
    re.compile(r"\[ERROR\] CARBON is supported only between"),
    re.compile(r"Error occurred while initializing DB Util"),
    re.compile(r"java\.lang\.OutOfMemoryError"),
)
MAX_ERRORS_KEPT = 200
PID_FILE = "wso2carbon.pid"  # written by bin/api-manager.sh: the server's pid


class JvmRunFailed(ApimUpgradeError):
    """An api-manager.sh run failed; the message lists what the console said."""

    exit_code = 6


@dataclass(frozen=True)
class JvmRun:
    """One run of api-manager.sh: what to pass and how to judge it."""

    label: str
    home: Path
    args: tuple[str, ...]
    java_home: Path | None
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    log_file: Path | None = None
    timeout: float = 1800.0
    required_markers: tuple[str, ...] = ()  # regexes that must each appear before server-up
    stop_grace: float = 60.0
    # ERROR lines that are the run's *result* (pre-migration findings), not its failure.
    expected_error: Callable[[str], bool] | None = None


@dataclass
class JvmResult:
    label: str
    server_up_after: float
    seconds: float
    exit_code: int | None
    markers: dict[str, str]
    errors: list[str]
    log_file: Path | None


class _Console:
    """Consumes console lines: masks secrets, logs, remembers markers and errors."""

    def __init__(self, run: JvmRun, sink: Callable[[str], None] | None) -> None:
        self.run = run
        self.sink = sink
        self.secrets = sorted((v for v in run.secrets.values() if len(v) >= 3), key=len, reverse=True)
        self.errors: list[str] = []
        self.error_count = 0
        self.markers: dict[str, str] = {}
        self.patterns = [re.compile(m) for m in run.required_markers]
        self.log = open(run.log_file, "a", encoding="utf-8") if run.log_file else None
        self.lock = threading.Lock()

    def mask(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, "***")
        return line

    def __call__(self, raw: str) -> None:
        line = self.mask(raw)
        with self.lock:
            if self.log is not None:
                self.log.write(line + "\n")
                self.log.flush()
            expected = self.run.expected_error is not None and self.run.expected_error(line)
            if not expected and (ERROR_LINE.match(line) or any(p.search(line) for p in KNOWN_FAILURES)):
                self.error_count += 1
                if len(self.errors) < MAX_ERRORS_KEPT:
                    self.errors.append(line)
            for pattern in self.patterns:
                if pattern.pattern not in self.markers and pattern.search(line):
                    self.markers[pattern.pattern] = line
        if self.sink is not None:
            self.sink(line)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def run_api_manager(run: JvmRun, on_line: Callable[[str], None] | None = None) -> JvmResult:
    """Start the server, wait for server-up, stop it, judge the run (raises JvmRunFailed)."""
    script = run.home / "bin" / "api-manager.sh"
    if not script.exists():
        raise JvmRunFailed(f"{script} does not exist; is {run.home} an unpacked WSO2 API-M home?")
    if run.log_file is not None:
        run.log_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if run.java_home is not None:
        env["JAVA_HOME"] = str(run.java_home)
    env.update(run.secrets)
    console = _Console(run, on_line)
    started = time.monotonic()
    try:
        with _tracked(Supervised(["bash", script, *run.args], env=env, cwd=script.parent, on_line=console)) as server:
            try:
                up_line = server.wait_for(lambda line: bool(SERVER_UP.search(line)), run.timeout)
            except ProcessFailed as exc:
                server.stop(run.stop_grace)
                raise JvmRunFailed(f"{run.label}: {exc}; the server was killed. " + _error_summary(console)) from None
            up_after = time.monotonic() - started
            if up_line is None:
                code = server.stop(run.stop_grace)
                raise JvmRunFailed(
                    f"{run.label}: the server exited (code {code}) before it was up. "
                    + _error_summary(console)
                    + f" Last output: {' | '.join(list(server.tail)[-3:])}"
                )
            time.sleep(0.5)  # let lines printed right after server-up arrive
            code = server.stop(run.stop_grace)
            if group_alive(server.pgid):
                raise JvmRunFailed(f"{run.label}: processes of group {server.pgid} survived shutdown")
    finally:
        console.close()
    result = JvmResult(
        run.label,
        up_after,
        time.monotonic() - started,
        code,
        dict(console.markers),
        list(console.errors),
        run.log_file,
    )
    missing = [m for m in run.required_markers if m not in console.markers]
    if console.errors or missing:
        problems = []
        if missing:
            problems.append("completion lines never appeared: " + ", ".join(repr(m) for m in missing))
        if console.errors:
            problems.append(_error_summary(console))
        raise JvmRunFailed(
            f"{run.label} failed: " + "; ".join(problems) + (f" Full log: {run.log_file}" if run.log_file else "")
        )
    return result


def stop_leftover_server(home: Path, grace: float = 30.0) -> dict[str, Any] | None:
    """Stop a server of ``home`` that a crashed run left behind; what was stopped, or None.

    The pid comes from the server's own pid file and counts only if that process is
    really a server of this home (its command line or CARBON_HOME names it): a stale
    file whose pid now belongs to another process is never signalled.
    """
    try:
        pid = int((home / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    if not _serves_home(pid, home):
        return None
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return None
    terminate_group(pgid, grace)
    return {"pid": pid, "pgid": pgid, "pid_file": str(home / PID_FILE)}


def _serves_home(pid: int, home: Path) -> bool:
    proc = Path("/proc") / str(pid)
    try:
        args = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        environ = (proc / "environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False
    wanted = str(home.resolve())
    named = {a.partition("=")[2] if a.startswith("-Dcarbon.home=") else a for a in args}
    return wanted in named or f"CARBON_HOME={wanted}".encode() in environ


def _error_summary(console: _Console) -> str:
    if not console.errors:
        return "No ERROR lines were printed."
    shown = console.errors[:10]
    more = f" (+{console.error_count - len(shown)} more)" if console.error_count > len(shown) else ""
    return f"{console.error_count} ERROR line(s): " + " || ".join(shown) + more


# --- never leave a server behind -------------------------------------------------------
# A flow run that is cancelled or interrupted gets SIGTERM/SIGINT; the servers we
# started live in their own process groups, so they must be stopped explicitly.

_LIVE: weakref.WeakSet[Supervised] = weakref.WeakSet()
_installed = False


class _tracked:
    def __init__(self, server: Supervised) -> None:
        self.server = server
        _install_handlers()
        _LIVE.add(server)

    def __enter__(self) -> Supervised:
        return self.server

    def __exit__(self, *exc: object) -> None:
        try:
            self.server.stop()
        finally:
            _LIVE.discard(self.server)


def stop_all() -> None:
    for server in list(_LIVE):
        server.stop(grace=10)


def _install_handlers() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, _previous: Any = previous) -> None:
            stop_all()
            if callable(_previous):
                _previous(signum, frame)
            elif _previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)
