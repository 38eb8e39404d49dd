"""The control plane's JDBC connection pools: open for as long as the server runs.

WSO2's datasources use the Tomcat JDBC pool, which opens ``initialSize`` connections
(default 10) when the datasource is created and keeps them until the server stops. A
stand-in holding none would hide what makes a live estate hard to copy: ``CREATE DATABASE
... TEMPLATE`` refuses a source that has other sessions. Gateway workers hold no pool
(they reach no database). The REST and token endpoints borrow a pooled connection for each
request (:func:`borrowed`) and give it back, so a busy server still holds the same sessions.
Stand-in: the real pool also validates, recycles and grows up to ``maxActive``.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from apim_upgrade.errors import DatabaseError
from apim_upgrade.postgres import db
from sandbox.distribution.config import Datasource
from sandbox.distribution.registry import guard

# What PostgreSQL's JDBC driver reports as application_name unless the URL sets one.
JDBC_APPLICATION_NAME = "PostgreSQL JDBC Driver"
BORROW_TIMEOUT_SECONDS = 30.0  # Tomcat JDBC's maxWait is 30 s by default (60 s in WSO2's defaults)
_held: list[Any] = []
_idle: dict[str, queue.Queue[Any]] = {}  # per datasource key: the connections not lent out


def open_pools(sources: tuple[Datasource, ...]) -> dict[str, int]:
    """Open each datasource's initial connections; how many per datasource name."""
    opened: dict[str, int] = {}
    for source in sources:
        if source.server is None or source.dbname is None:
            continue  # embedded H2
        idle: queue.Queue[Any] = queue.Queue()
        with guard(source, "creating its connection pool"):
            for _ in range(source.pool_initial):
                conn = db.connect(source.server, source.dbname, autocommit=True, application_name=JDBC_APPLICATION_NAME)
                _held.append(conn)
                idle.put(conn)
        _idle[source.key] = idle
        opened[source.name] = source.pool_initial
    return opened


@contextmanager
def borrowed(source: Datasource, timeout: float = BORROW_TIMEOUT_SECONDS) -> Iterator[Any]:
    """A pooled autocommit connection of ``source`` for one request; returned to the pool afterwards."""
    idle = _idle.get(source.key)
    if idle is None:
        raise DatabaseError(f"{source.name} has no connection pool on this node (a gateway worker or an H2 database)")
    try:
        conn = idle.get(timeout=timeout)
    except queue.Empty:
        raise DatabaseError(
            f"Cannot get a connection from {source.name}: pool exhausted, none available for {timeout:.0f} s"
        ) from None
    try:
        yield conn
    finally:
        idle.put(conn)


def close_pools() -> None:
    """Release every pooled connection (the server is stopping)."""
    _idle.clear()
    while _held:
        _held.pop().close()  # closing a connection the server already ended is a no-op
