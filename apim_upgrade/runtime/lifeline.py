"""Run a command; take its whole process group down when the process that started us dies.

``python lifeline.py FD -- COMMAND...`` (started by process.Supervised, as the leader of
the server's own process group). FD is the read end of a pipe whose only write end stays
in the starting process. When that process dies, even by SIGKILL, which no handler
sees, the kernel closes the write end, the read here returns EOF, and the group is
terminated: SIGTERM, then SIGKILL after a grace period. PR_SET_PDEATHSIG is not used on
purpose: it fires when the *thread* that forked the child exits, and Prefect runs tasks
in worker threads.

Standard library only, run by path: it must start in milliseconds and work from any
directory. Signals sent to the group reach the command directly; this process only
waits for it and exits the way it did (same code, or same signal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

GRACE_SECONDS = 10.0


def _ignore(signum: int, frame: object) -> None:
    """A handler, not SIG_IGN: dispositions set to SIG_IGN would be inherited by the command."""


def _take_group_down(child: subprocess.Popen[bytes]) -> None:
    group = os.getpgrp()
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)  # whatever is left, this process included


def _watch(fd: int, child: subprocess.Popen[bytes]) -> None:
    while True:
        try:
            if not os.read(fd, 64):
                break  # EOF: the starting process is gone
        except InterruptedError:
            continue
    if child.poll() is None:
        _take_group_down(child)


def main(argv: list[str]) -> int:
    fd = int(argv[0])
    command = argv[argv.index("--") + 1 :]
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    child = subprocess.Popen(command, close_fds=True)  # same group and session; inherits stdio
    threading.Thread(target=_watch, args=(fd, child), daemon=True).start()
    code = child.wait()
    if code < 0:  # died of a signal: die of the same one, so the caller sees what really happened
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
