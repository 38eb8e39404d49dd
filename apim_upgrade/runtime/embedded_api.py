"""Embedded mode: Prefect's ephemeral API for one CLI run, started early and lean.

Without a configured API (no PREFECT_API_URL in the environment or the Prefect
profile) Prefect's client starts the same ASGI app in a subprocess on first use,
after importing the whole server package into the client (~3 s of CPU, ~90 MB)
and only then waits for it. Here the CLI starts that app itself (same factory,
same ephemeral flags, same database under PREFECT_HOME) once its fail-fast checks
passed, under the process wrapper's lifeline (it cannot outlive this process),
and points the client at it. The automation services (reactive triggers and their actions) are
off: no automation can exist in a throwaway API. Settings the operator made
(environment or profile) are kept; with an API configured nothing changes.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.runtime.ports import free_port
from apim_upgrade.runtime.process import Supervised

# Prefect settings (names as environment variables) and the values embedded mode uses.
DEFAULTS: dict[str, Any] = {
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": False,
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": 90,  # a busy host needs more than Prefect's 20 s
}
# What Prefect's own SubprocessASGIServer sets for its child.
_SERVER_FLAGS = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


class EmbeddedApiError(ApimUpgradeError):
    """Prefect's embedded API did not come up."""


@contextmanager
def embedded_api() -> Iterator[str | None]:
    """Run the block against an embedded API (its URL), or unchanged (None) when an API is configured."""
    import prefect.settings as ps

    if ps.get_current_settings().api.url:
        yield None
        return
    explicit = {s.name for s in ps.load_current_profile().settings} | set(os.environ)
    updates: dict[Any, Any] = {getattr(ps, k): v for k, v in DEFAULTS.items() if k not in explicit}
    with ps.temporary_settings(updates=updates):
        settings = ps.get_current_settings()
        port = free_port()
        env = {**os.environ, **_SERVER_FLAGS, **settings.to_environment_variables(exclude_unset=True)}
        args = [sys.executable, "-m", "uvicorn", "--app-dir", str(_prefect_dir()), "--factory"]
        args += ["prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port)]
        args += ["--log-level", "error", "--lifespan", "on"]
        with Supervised(args, env=env) as server:
            url = f"http://127.0.0.1:{port}/api"
            _wait_healthy(server, url, float(settings.server.ephemeral.startup_timeout_seconds))
            # In the environment too, not only in this thread's settings context: a thread that
            # does not carry the context (process.py's pumps do) and logs to Prefect would
            # otherwise make Prefect start a second, temporary server of its own.
            saved = os.environ.get("PREFECT_API_URL")
            os.environ["PREFECT_API_URL"] = url
            try:
                with ps.temporary_settings(updates={ps.PREFECT_API_URL: url}):
                    try:
                        yield url
                    finally:
                        _drain_to_api()
            finally:
                if saved is None:
                    os.environ.pop("PREFECT_API_URL", None)
                else:
                    os.environ["PREFECT_API_URL"] = saved


def _drain_to_api() -> None:
    """Send the logs and events still queued while the API is there to receive them."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=5)


def _wait_healthy(server: Supervised, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.returncode() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 (our own http URL)
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    tail = " | ".join(list(server.tail)[-5:]) or "(no output)"
    ended = server.returncode() is not None
    raise EmbeddedApiError(
        f"Prefect's embedded API {'exited' if ended else 'did not answer'} on {url} "
        f"{'at start-up' if ended else f'within {timeout:.0f} s'} ({tail[-1500:]}); "
        "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or set PREFECT_API_URL to a running Prefect server"
    )


def _prefect_dir() -> Any:
    import prefect

    return prefect.__module_path__.parent
