"""Crash-test failpoints: a named step boundary at which the process announces itself and waits.

Test harness only. The product raises a standard audit event at every step boundary
(``sys.audit("apim_upgrade.step", when, phase, step)``: a no-op unless a hook is
installed); ``tests/failpoint_site/sitecustomize.py`` installs :func:`hook` in the
processes a crash test starts (it puts that folder on their ``PYTHONPATH``).

Step boundaries pass in milliseconds, so a test watching from outside cannot kill the
process reliably *between* two steps. With ``APIM_UPGRADE_FAILPOINT`` set to
``before:<phase>/<step>`` or ``after:<phase>/<step>`` (optionally ``#n``: the n-th time
in this process) and ``APIM_UPGRADE_FAILPOINT_FILE`` naming a file, the process writes
that file when it reaches the point and then blocks until it is killed: the test, not
the product, delivers the SIGKILL. Unset (always, outside tests) it is one dict lookup.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

POINT_VARIABLE = "APIM_UPGRADE_FAILPOINT"
FILE_VARIABLE = "APIM_UPGRADE_FAILPOINT_FILE"

_seen: Counter[str] = Counter()
_lock = threading.Lock()


EVENT = "apim_upgrade.step"
SITE_DIR = Path(__file__).with_name("failpoint_site")


def hook(event: str, args: tuple[object, ...]) -> None:
    """A ``sys.addaudithook`` hook: blocks at the requested step boundary."""
    if event == EVENT:
        when, phase, step = (str(a) for a in args)
        reached(when, phase, step)


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the failpoint hook installed in the child Python process."""
    paths = [str(SITE_DIR), *filter(None, env.get("PYTHONPATH", "").split(":"))]
    return {**env, "PYTHONPATH": ":".join(paths)}


def reached(when: str, phase: str, step: str) -> None:
    """Called at every audited step boundary; blocks forever at the requested one."""
    spec = os.environ.get(POINT_VARIABLE)
    announce = os.environ.get(FILE_VARIABLE)
    if not spec or not announce:
        return
    name, _, nth = spec.partition("#")
    here = f"{when}:{phase}/{step}"
    if name != here:
        return
    with _lock:
        _seen[here] += 1
        count = _seen[here]
    if count != (int(nth) if nth else 1):
        return
    path = Path(announce)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"point": spec, "pid": os.getpid()}))
    tmp.replace(path)  # the watcher never sees a half-written file
    while True:  # wait to be killed
        time.sleep(3600)
