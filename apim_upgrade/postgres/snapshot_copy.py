"""Online copies of a live source: one exported snapshot, pg_dump --snapshot, pg_restore.

CREATE DATABASE ... TEMPLATE refuses a source that has other sessions, and production's
control plane keeps a JDBC pool open on it for its whole life. This copy reads the source
in one REPEATABLE READ transaction instead:

1. ``pg_export_snapshot()`` names the transaction's snapshot; the exact row counts and the
   catalogue (:func:`catalog.read_snapshot`) are read in that same transaction;
2. ``pg_dump --format=directory --jobs=N --snapshot=ID`` dumps exactly that snapshot while
   the transaction stays open (whatever the clients write meanwhile is not in it);
3. ``CREATE DATABASE target TEMPLATE template0 OWNER owner`` with the source's encoding and
   locale, the ``copying`` marker set at once (as for a template copy), then
   ``pg_restore --jobs=N`` as the maintenance role, owners and privileges kept.

So the copy gate compares the copy with counts of the very snapshot the copy was made from:
exact, although production keeps writing. Nobody is disconnected.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from apim_upgrade.errors import DatabaseError
from apim_upgrade.postgres import catalog, db, queries
from apim_upgrade.postgres.catalog import Snapshot
from apim_upgrade.runtime import process

# application_name of every session of the snapshot copy (seen in pg_stat_activity).
SNAPSHOT_APPLICATION_NAME = "apim-upgrade snapshot copy"
# Uncompressed: measured at scale 10 on 2 cores, level 1 made the dump 4x and the restore 1.4x
# slower than level 0 (level 6, the default, 8x and 1.9x). The dump is at most the size of the
# source's table data (no indexes) and is deleted as soon as it is restored.
DUMP_COMPRESSION = 0


@dataclass(frozen=True)
class CopyChoice:
    """Which copy method runs for one source, and why (recorded in the audit trail)."""

    method: str  # "template" | "snapshot"
    reason: str
    sessions: list[str] = field(default_factory=list)  # the other sessions seen on the source


def choose_method(server: db.PgServer, maintenance_db: str, source: str, configured: str) -> CopyChoice:
    """``configured`` is the plan's ``copy.method``; ``auto`` looks at the source's other sessions."""
    with db.session(server, maintenance_db, read_only=True, autocommit=True) as conn:
        rows = db.fetch_all(conn, queries.OTHER_SESSIONS, ([source],))
    seen = [f"{app} from {addr} (pid {pid}, user {user})" for _, pid, app, addr, user, _ in rows]
    if configured == "template":
        return CopyChoice("template", "copy.method = 'template' in the plan", seen)
    if configured == "snapshot":
        return CopyChoice("snapshot", "copy.method = 'snapshot' in the plan", seen)
    if seen:
        return CopyChoice(
            "snapshot",
            f"copy.method = 'auto' and {len(seen)} other session(s) are connected to '{source}': "
            "CREATE DATABASE ... TEMPLATE would refuse it, the snapshot copy reads it online",
            seen,
        )
    return CopyChoice("template", f"copy.method = 'auto' and no other session is connected to '{source}'", seen)


def client_tool(name: str, server_major: int) -> Path:
    """``pg_dump`` or ``pg_restore`` for a server of major version ``server_major``.

    Debian installs each major's programs under /usr/lib/postgresql/N/bin: that one first,
    else the one on PATH; either must be at least the server's major (pg_dump refuses older).
    """
    versioned = Path(f"/usr/lib/postgresql/{server_major}/bin/{name}")
    found = versioned if os.access(versioned, os.X_OK) else shutil.which(name)
    if found is None:
        raise DatabaseError(
            f"{name} is not installed (the snapshot copy runs it); install the PostgreSQL "
            f"{server_major} client programs (Debian: postgresql-client-{server_major})"
        )
    result = process.run([found, "--version"], timeout=30)
    match = re.search(r"\(PostgreSQL\) (\d+)", " ".join(result.tail))
    major = int(match.group(1)) if match else 0
    if major < server_major:
        raise DatabaseError(
            f"{found} is version {major or '?'}, older than the server ({server_major}); install "
            f"postgresql-client-{server_major} or put a newer {name} first on PATH"
        )
    return Path(found)


def server_major(server: db.PgServer, maintenance_db: str) -> int:
    with db.session(server, maintenance_db, read_only=True, autocommit=True) as conn:
        row = db.fetch_one(conn, queries.SERVER_VERSION_NUM)
    return int(row[0]) // 10000 if row else 0


@dataclass(frozen=True)
class SnapshotCopy:
    """What a snapshot copy did: the snapshot it read, the commands it ran, how long each took."""

    snapshot: Snapshot
    snapshot_id: str
    statement: str  # the CREATE DATABASE sent
    commands: list[str]  # pg_dump and pg_restore argument lists, as run (no password: it is in the environment)
    dump_seconds: float
    restore_seconds: float


def create_snapshot_copy(
    server: db.PgServer,
    maintenance_db: str,
    *,
    source: str,
    target: str,
    owner: str,
    schema: str,
    strategy: str | None,
    jobs: int,
    dump_dir: Path,
    copying_marker: str,
    on_line: Callable[[str], None] | None = None,
) -> SnapshotCopy:
    """Copy the live ``source`` to ``target`` from one exported snapshot; returns that snapshot's counts.

    ``dump_dir`` (under the work directory) holds the dump between pg_dump and pg_restore and is
    removed whatever happens. A failure at any point leaves either no target or one carrying the
    ``copying`` marker: the rerun rebuilds it, exactly as a half-made template copy.
    """
    major = server_major(server, maintenance_db)
    pg_dump, pg_restore = client_tool("pg_dump", major), client_tool("pg_restore", major)
    env = server.tool_environment(dict(os.environ))
    shutil.rmtree(dump_dir, ignore_errors=True)  # left by a killed run
    dump_dir.parent.mkdir(parents=True, exist_ok=True)
    dump = [
        str(pg_dump),
        "--format=directory",
        f"--jobs={jobs}",
        f"--compress={DUMP_COMPRESSION}",
        "--no-sync",  # a throwaway file: fsync buys nothing
        "--no-password",
        f"--file={dump_dir}",
        f"--dbname={server.tool_conninfo(source, SNAPSHOT_APPLICATION_NAME)}",
    ]
    restore = [
        str(pg_restore),
        f"--jobs={jobs}",
        "--exit-on-error",
        "--no-password",
        f"--dbname={server.tool_conninfo(target, SNAPSHOT_APPLICATION_NAME)}",
        str(dump_dir),
    ]
    activity = f"holding the snapshot of '{source}' while pg_dump reads it"
    try:
        with db.snapshot_transaction(
            server, source, activity=activity, application_name=SNAPSHOT_APPLICATION_NAME
        ) as conn:
            db.execute(conn, queries.KEEP_IDLE_TRANSACTION)
            snapshot_id = str((db.fetch_one(conn, queries.EXPORT_SNAPSHOT) or ("",))[0])
            snapshot = catalog.read_snapshot(conn, source, schema)
            dump.insert(3, f"--snapshot={snapshot_id}")
            dumped = process.run(dump, env=env, on_line=on_line)
        with db.session(
            server,
            maintenance_db,
            autocommit=True,
            activity=f"creating '{target}' to restore '{source}' into",
            application_name=SNAPSHOT_APPLICATION_NAME,
        ) as conn:
            encoding, collate, ctype = db.fetch_one(conn, queries.DATABASE_LOCALE, (source,)) or ("UTF8", "C", "C")
            statement = queries.create_database_for_restore(target, owner, encoding, collate, ctype, strategy)
            with db.failure_named(f"creating '{target}'", "; check the [databases] section of the plan"):
                db.execute(conn, statement)
            db.execute(conn, queries.comment_on_database(target, copying_marker))
            sent = db.render(conn, statement)
        restored = process.run(restore, env=env, on_line=on_line)
    finally:
        shutil.rmtree(dump_dir, ignore_errors=True)
    return SnapshotCopy(
        snapshot=snapshot,
        snapshot_id=snapshot_id,
        statement=sent,
        commands=[shlex.join(dump), shlex.join(restore)],
        dump_seconds=dumped.seconds,
        restore_seconds=restored.seconds,
    )
