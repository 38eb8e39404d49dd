"""The estate lock: one writing command per estate at a time, whatever the command or mode.

Held as a session-level advisory lock on the server's maintenance database (so it is
released by the server itself if the process dies), keyed on the estate's name: run,
rehearse, the deployments' flows, rollback and ``sandbox destroy`` all take it first. The
one refused exits 9 naming the holder's pid, application and address.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from apim_upgrade.plan import Plan
from apim_upgrade.postgres.schema_runner import SessionLock, advisory_lock


def lock_key(estate_name: str) -> str:
    # A rehearsal plan is named <estate>_rehearsal_<date>: it shares its estate's lock.
    return "estate:" + estate_name.split("_rehearsal_", 1)[0]


@contextmanager
def estate_lock(plan: Plan, command: str) -> Iterator[SessionLock]:
    """Hold the estate's lock for the block; fails at once (exit 9) if another command holds it."""
    with advisory_lock(
        plan.server(),
        plan.postgres.maintenance_db,
        lock_key(plan.name),
        f"apim-upgrade {plan.name} {command}",
        f"working on estate '{lock_key(plan.name).removeprefix('estate:')}'",
    ) as lock:
        yield lock
