"""The control plane's JDBC connection pools: open for as long as the server runs.

WSO2's datasources use the Tomcat JDBC pool, which opens ``initialSize`` connections
(default 10) when the datasource is created and keeps them until the server stops. A
stand-in holding none would hide what makes a live estate hard to copy: ``CREATE DATABASE
... TEMPLATE`` refuses a source that has other sessions. Gateway workers hold no pool
(they reach no database). Stand-in: the connections idle; the real pool also validates
and recycles them.
"""

from __future__ import annotations

from typing import Any

from apim_upgrade.postgres import db
from sandbox.distribution.config import Datasource
from sandbox.distribution.registry import guard

# What PostgreSQL's JDBC driver reports as application_name unless the URL sets one.
JDBC_APPLICATION_NAME = "PostgreSQL JDBC Driver"
_held: list[Any] = []


def open_pools(sources: tuple[Datasource, ...]) -> dict[str, int]:
    """Open each datasource's initial connections; how many per datasource name."""
    opened: dict[str, int] = {}
    for source in sources:
        if source.server is None or source.dbname is None:
            continue  # embedded H2
        with guard(source, "creating its connection pool"):
            for _ in range(source.pool_initial):
                conn = db.connect(source.server, source.dbname, autocommit=True, application_name=JDBC_APPLICATION_NAME)
                _held.append(conn)
        opened[source.name] = source.pool_initial
    return opened


def close_pools() -> None:
    """Release every pooled connection (the server is stopping)."""
    while _held:
        _held.pop().close()  # closing a connection the server already ended is a no-op
