"""Crash-test failpoints: a named step boundary at which the process announces itself and waits.

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
