"""Retry policy shared by every task: only transient database failures retry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

from apim_upgrade.errors import DatabaseUnavailable

RETRIES = 2
RETRY_DELAYS: list[float] = [2, 10]
F = TypeVar("F", bound=Callable[..., Any])


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry when the server was unreachable; a wrong name or a failed gate never heals."""
    try:
        state.result()
    except DatabaseUnavailable:
        return True
    except BaseException:  # noqa: BLE001 - any other failure is final
        return False
    return False


def retryable_task(name: str) -> Callable[[F], Any]:
    """``@task`` with our retry policy; never cached (every run re-checks real state)."""
    return task(
        name=name,
        retries=RETRIES,
        retry_delay_seconds=RETRY_DELAYS,
        retry_condition_fn=is_transient,
        cache_policy=NO_CACHE,
    )
