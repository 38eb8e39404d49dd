"""The one subprocess wrapper.

Argument lists only (never a shell string), the child in its own process
group, output streamed line by line to a callback (memory stays bounded),
the whole group killed on timeout or when the caller is interrupted, and
the exit code always checked.
"""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from apim_upgrade.errors import ApimUpgradeError

TAIL_LINES = 40
LIFELINE = Path(__file__).with_name("lifeline.py")


class ProcessFailed(ApimUpgradeError):
    """A child process exited non-zero or timed out."""


@dataclass(frozen=True)
class ProcessResult:
    args: tuple[str, ...]
    returncode: int
    seconds: float
    tail: tuple[str, ...]  # the last lines of output, for error messages


def run(
    args: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
    user: str | None = None,
) -> ProcessResult:
    """Run ``args`` to completion, streaming its merged output to ``on_line``."""
    argv = [str(a) for a in args]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    started = time.monotonic()
    proc = _spawn(argv, env, cwd)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)

    reader = _thread_in_this_context(pump)
    reader.start()
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        reader.join(5)
        raise ProcessFailed(
            f"{Path(argv[0]).name} did not finish within {timeout:.0f} s and was killed; "
            f"last output: {' | '.join(list(tail)[-5:])}"
        ) from None
    except BaseException:
        kill_group(proc)  # interrupted or cancelled: leave nothing behind
        raise
    reader.join(5)
    result = ProcessResult(tuple(argv), returncode, time.monotonic() - started, tuple(tail))
    if check and returncode != 0:
        raise ProcessFailed(
            f"{' '.join(argv[:3])} ... exited with code {returncode}; "
            f"last output: {' | '.join(list(tail)[-5:]) or '(none)'}"
        )
    return result


def _thread_in_this_context(target: Callable[[], None]) -> threading.Thread:
    """A daemon thread that runs ``target`` in a copy of the caller's context.

    The line callbacks log to Prefect; a plain thread starts with empty context variables,
    so Prefect would not see the run's settings (its API URL) there and would start a
    temporary API server of its own to send those logs to.
    """
    return threading.Thread(target=contextvars.copy_context().run, args=(target,), daemon=True)


def _spawn(
    argv: list[str], env: Mapping[str, str] | None, cwd: Path | None, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[str]:
    """Start ``argv`` in its own process group, merged output as text lines, no stdin."""
    try:
        return subprocess.Popen(
            argv,
            pass_fds=pass_fds,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,  # its own group: kill_group reaches every child it forks
            text=True,
            errors="replace",
            bufsize=1,
        )
    except OSError as exc:
        raise ProcessFailed(f"cannot start {argv[0]}: {exc.strerror}; is it installed and on PATH?") from None


def kill_group(proc: subprocess.Popen[str], grace: float = 10.0) -> None:
    """SIGTERM the whole process group, then SIGKILL whatever is left."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # The leader is gone; make sure no child of the group survives it.
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return


class Supervised:
    """A long-running child (a server) watched line by line until a condition holds.

    The child runs in its own process group; :meth:`stop` (also called on
    exit from the ``with`` block, whatever happened) terminates the whole
    group and waits until nothing of it is left. If this process dies without
    stopping it (SIGKILL, a crash), the group goes down with it: the group's
    leader is a tiny watcher (lifeline.py) that ends it when the pipe this
    process holds open reports end-of-file.
    """

    def __init__(
        self,
        args: Sequence[str | Path],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.argv = [str(a) for a in args]
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._on_line = on_line
        self._cond = threading.Condition()
        self._matched: str | None = None
        self._watch: Callable[[str], bool] | None = None
        watch_fd, self._lifeline = os.pipe()  # the write end never leaves this process (not inheritable)
        try:
            self.proc = _spawn([sys.executable, str(LIFELINE), str(watch_fd), "--", *self.argv], env, cwd, (watch_fd,))
        except BaseException:
            os.close(self._lifeline)
            raise
        finally:
            os.close(watch_fd)
        self.pgid = os.getpgid(self.proc.pid)
        self._reader = _thread_in_this_context(self._pump)
        self._reader.start()

    def __enter__(self) -> Supervised:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.tail.append(line)
            if self._on_line is not None:
                self._on_line(line)
            with self._cond:
                if self._watch is not None and self._matched is None and self._watch(line):
                    self._matched = line
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str | None:
        """The first line (from now on) satisfying ``predicate``; None if the child ended first.

        Raises ProcessFailed on timeout (the caller then stops the child).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._matched, self._watch = None, predicate
            while self._matched is None:
                if not self._reader.is_alive():
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProcessFailed(
                        f"{Path(self.argv[0]).name} did not reach its completion marker within "
                        f"{timeout:.0f} s; last output: {' | '.join(list(self.tail)[-5:]) or '(none)'}"
                    )
                self._cond.wait(min(remaining, 0.5))
            return self._matched

    def returncode(self) -> int | None:
        return self.proc.poll()

    def stop(self, grace: float = 30.0) -> int | None:
        """Terminate the whole process group; returns the leader's exit code."""
        if self.proc.poll() is None:
            kill_group(self.proc, grace)
        else:
            _kill_leftovers(self.pgid)
        self._reader.join(5)
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1
        return self.proc.poll()


def _kill_leftovers(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def terminate_group(pgid: int, grace: float = 10.0, alive: Callable[[int], bool] | None = None) -> None:
    """SIGTERM a process group that is not our child, SIGKILL what is left after ``grace``.

    ``alive(pgid)`` says whether it still runs (default: any process of the group exists).
    """
    running = alive or group_alive
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while running(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not running(pgid):
            return


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists (for tests and post-stop checks)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# A background service started here (a traffic generator): kept so that it is reaped when it ends.
_DETACHED: dict[int, subprocess.Popen[bytes]] = {}


def start_detached(
    args: Sequence[str | Path], *, log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> int:
    """Start ``args`` as a background service that outlives this process; return its pid.

    Like ``nohup setsid``: its own session (and process group, whose id is the pid), no stdin,
    its output appended to ``log``. Stop it with :func:`stop_detached`, from this process or
    another one.
    """
    argv = [str(a) for a in args]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProcessFailed(f"cannot start {argv[0]}: {exc.strerror}; is it installed and on PATH?") from None
    _DETACHED[proc.pid] = proc
    return proc.pid


def stop_detached(pid: int, grace: float = 10.0) -> bool:
    """SIGTERM the process group of a :func:`start_detached` service, SIGKILL it after ``grace`` s.

    True when it was running. The caller makes sure ``pid`` is that service (pids are reused).
    """
    was_running = detached_running(pid)
    terminate_group(pid, grace, alive=detached_running)  # its group id is its pid (own session)
    _DETACHED.pop(pid, None)
    return was_running


def detached_running(pid: int) -> bool:
    """True while the process ``pid`` runs (a zombie, ended but not yet reaped, does not count)."""
    proc = _DETACHED.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
