"""A real, throwaway `prefect server` for the deployment tests and the benchmarks.

Production runs against a Prefect server that is already running; tests and
benchmarks start their own, on a free port with its own PREFECT_HOME.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from apim_upgrade.runtime.ports import free_port
from sandbox.errors import SandboxError

__all__ = ["free_port", "start_prefect_server", "stop_prefect_server"]


def start_prefect_server(home: Path, port: int, timeout: float = 120) -> subprocess.Popen[bytes]:
    """Start `prefect server` in its own session and wait until /api/health answers."""
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env.pop("PREFECT_API_URL", None)
    # The UI served by this server calls the API at PREFECT_UI_API_URL (default: port 4200, not this one).
    env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    stop_prefect_server(proc)
    raise SandboxError(f"prefect server did not answer on port {port} within {timeout:.0f} s")


def stop_prefect_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
