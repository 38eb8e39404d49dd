"""Retry policy shared by every task: only transient database failures retry.

Transient means the connection to the server was lost or could not be made (server
restarting, backend terminated, network): the transaction in flight was rolled back by the
server, so running the whole task again is safe, and every task re-checks real state first.
Anything else (a failing statement, a failed gate, a wrong name) never heals by retrying.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

from apim_upgrade.errors import ApimUpgradeError, DatabaseUnavailable, disk_full_in
from apim_upgrade.postgres import db

RETRIES = 2
# Bounded backoff: a restarting server is usually back within seconds; after ~12 s the
# task fails with its one-line DatabaseUnavailable message (rerun resumes).
RETRY_DELAYS: list[float] = [2, 10]
F = TypeVar("F", bound=Callable[..., Any])


def is_transient_error(exc: BaseException) -> bool:
    """A lost or refused connection: ours, the driver's, or SQLAlchemy's wrapping of it (GX gates)."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if db.connection_lost(exc):
        return True
    orig = getattr(exc, "orig", None)  # sqlalchemy.exc.DBAPIError keeps the driver's error here
    return isinstance(orig, BaseException) and db.connection_lost(orig)


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry when the server was unreachable; a wrong name or a failed gate never heals."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - classified below; anything else is final
        return is_transient_error(exc)
    return False


def retryable_task(name: str) -> Callable[[F], Any]:
    """``@task`` with our retry policy; never cached (every run re-checks real state).

    A full disk inside any task (ours, GX's or Prefect's own writes) becomes one DiskFull
    line naming the file, instead of a stack from whatever library was writing.
    """

    def decorate(fn: F) -> Any:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except ApimUpgradeError:
                raise
            except Exception as exc:  # only a full disk is translated; anything else re-raised as is
                full = disk_full_in(exc)
                if full is None:
                    raise
                raise full from None

        return task(
            name=name,
            retries=RETRIES,
            retry_delay_seconds=RETRY_DELAYS,
            retry_condition_fn=is_transient,
            cache_policy=NO_CACHE,
        )(run)

    return decorate
