"""Database copies: CREATE DATABASE ... TEMPLATE, ownership markers, registry indexes.

A copy carries a marker in its database comment. ``copying`` is set right
after CREATE DATABASE, ``verified`` only after its quality gate passed, so a
rerun can tell a finished copy (skip it) from a half-made one (rebuild it)
and from a database that is not ours at all (refuse to touch it).
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from apim_upgrade.errors import DatabaseError
from apim_upgrade.plan import Plan
from apim_upgrade.postgres import db, queries

MARKER_PREFIX = "apim-upgrade:"
# application_name of the session running CREATE DATABASE (seen in pg_stat_activity).
COPY_APPLICATION_NAME = "apim-upgrade copy"


class CopyState(Enum):
    ABSENT = "absent"
    INCOMPLETE = "incomplete"  # ours, not verified: rebuild
    VERIFIED = "verified"  # ours, gate passed: skip
    FOREIGN = "foreign"  # not made by this plan: never touch


def marker(plan: Plan, source: str, state: str, **extra: Any) -> str:
    return MARKER_PREFIX + json.dumps({"plan": plan.name, "source": source, "state": state, **extra}, sort_keys=True)


def read_marker(comment: str | None) -> dict[str, Any] | None:
    if not comment or not comment.startswith(MARKER_PREFIX):
        return None
    try:
        data = json.loads(comment[len(MARKER_PREFIX) :])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def copy_state(info: tuple[Any, ...] | None, plan: Plan, source: str, intent_pending: bool) -> CopyState:
    """Classify a target from its pg_database row (name, size, comment, owner)."""
    if info is None:
        return CopyState.ABSENT
    mark = read_marker(info[2])
    if mark and mark.get("plan") == plan.name and mark.get("source") == source:
        return CopyState.VERIFIED if mark.get("state") == "verified" else CopyState.INCOMPLETE
    if mark is None and intent_pending:
        return CopyState.INCOMPLETE  # killed between CREATE DATABASE and the marker
    return CopyState.FOREIGN


def target_state(
    server: db.PgServer, maintenance_db: str, plan: Plan, source: str, target: str, intent_pending: bool
) -> CopyState:
    with db.session(server, maintenance_db, read_only=True, autocommit=True) as conn:
        info = db.fetch_one(conn, queries.DATABASE_INFO, ([target],))
    return copy_state(info, plan, source, intent_pending)


def terminate_sessions(server: db.PgServer, maintenance_db: str, source: str) -> list[int]:
    """Terminate other sessions on ``source`` (only when the operator opted in)."""
    with db.session(server, maintenance_db, autocommit=True) as conn:
        rows = db.fetch_all(conn, queries.TERMINATE_OTHER_SESSIONS, (source,))
    return [int(pid) for pid, _ in rows]


def create_copy(
    server: db.PgServer,
    maintenance_db: str,
    *,
    source: str,
    target: str,
    owner: str,
    strategy: str | None,
    copying_marker: str,
) -> str:
    """CREATE DATABASE target WITH TEMPLATE source OWNER owner; returns the SQL sent.

    A connection lost during CREATE DATABASE leaves no database behind (the server rolls the
    creation back); lost after it, the copy exists without its marker and the write-ahead
    intent record makes the retry rebuild it. Either way it is never marked verified here.
    """
    activity = f"copying '{source}' to '{target}' (CREATE DATABASE ... TEMPLATE)"
    with db.session(
        server, maintenance_db, autocommit=True, activity=activity, application_name=COPY_APPLICATION_NAME
    ) as conn:
        statement = queries.create_database_from_template(target, source, owner, strategy)
        try:
            db.execute(conn, statement)
        except db.PgError as exc:
            if db.connection_lost(exc):
                raise  # the session names server, database and activity; tasks retry it
            hint = ""
            if isinstance(exc, db.ObjectInUse):  # someone is connected to the source
                hint = (
                    ' Other sessions are connected to the source: set method = "auto" (or "snapshot") '
                    "under [copy] in the plan to copy it online, stop those clients, or set "
                    "terminate_connections = true under [copy]."
                )
            raise DatabaseError(
                f"copying '{source}' to '{target}' failed: {db.describe_pg_error(exc)}.{hint}"
            ) from None
        db.execute(conn, queries.comment_on_database(target, copying_marker))
        return db.render(conn, statement)


def drop_copy(server: db.PgServer, maintenance_db: str, target: str) -> None:
    """Drop a half-made copy of ours (callers check ownership first)."""
    with db.session(server, maintenance_db, autocommit=True) as conn:
        db.execute(conn, queries.drop_database(target))


def mark_copy(server: db.PgServer, maintenance_db: str, target: str, text: str) -> None:
    with db.session(server, maintenance_db, autocommit=True) as conn:
        db.execute(conn, queries.comment_on_database(target, text))


def create_registry_indexes(server: db.PgServer, target: str, schema: str) -> list[str]:
    """The two registry indexes WSO2's 4.2.0 migration needs (idempotent)."""
    sent = []
    with db.session(server, target) as conn:
        for index, (table, columns) in queries.REGISTRY_INDEXES.items():
            statement = queries.create_index_if_not_exists(schema, index, table, columns)
            doing = f"creating index {index} on '{target}'.{table}"
            with db.failure_named(doing, f"; is '{target}' really the shared (registry) database?"):
                db.execute(conn, statement)
            sent.append(db.render(conn, statement))
    return sent
