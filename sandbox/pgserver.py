"""Finding a PostgreSQL server for the demo, the sandbox and the tests.

Order: ``APIM_UPGRADE_PG_DSN`` if set; else a server on 127.0.0.1:5432; else
a throwaway cluster started from local PostgreSQL binaries (as the
``postgres`` OS user when running as root, since PostgreSQL refuses root).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from apim_upgrade.errors import ApimUpgradeError, PostgresUnavailable
from apim_upgrade.postgres import db
from apim_upgrade.runtime import process
from apim_upgrade.runtime.ports import free_port

DSN_VARIABLE = "APIM_UPGRADE_PG_DSN"
HOW_TO_PROVIDE = (
    f"set {DSN_VARIABLE}=postgresql://USER@HOST:PORT/ to a server where USER may CREATE "
    "DATABASE, start the local cluster (pg_ctlcluster 15 main start), or install the "
    "PostgreSQL server binaries (initdb, pg_ctl) so a throwaway cluster can be started"
)


@dataclass
class ServerHandle:
    server: db.PgServer
    throwaway_dir: Path | None = None  # set when we started a cluster ourselves

    def stop(self) -> None:
        if self.throwaway_dir is None:
            return
        pg_ctl = _binary("pg_ctl")
        if pg_ctl:
            process.run(
                [pg_ctl, "-D", self.throwaway_dir / "data", "-m", "fast", "stop"],
                user=_run_as(),
                check=False,
                timeout=60,
            )
        shutil.rmtree(self.throwaway_dir, ignore_errors=True)

    def restart(self, mode: str = "fast") -> None:
        """Restart a throwaway cluster (``fast`` ends every session; ``immediate`` is a crash).

        For fault tests only: a server we did not start is never restarted.
        """
        pg_ctl = _binary("pg_ctl")
        if self.throwaway_dir is None or pg_ctl is None:
            raise PostgresUnavailable(f"{self.server.describe()} was not started by apim-upgrade; not restarting it")
        data = self.throwaway_dir / "data"
        # -l: the restarted postmaster must not inherit our pipe, or run() would wait for it.
        process.run(
            [pg_ctl, "-D", data, "-l", self.throwaway_dir / "server.log", "-w", "-m", mode, "restart"],
            user=_run_as(),
            timeout=60,
        )


def reachable(server: db.PgServer) -> bool:
    try:
        with db.session(server, "postgres", autocommit=True) as conn:
            db.fetch_one(conn, "SELECT 1")
        return True
    except ApimUpgradeError:
        return False


def find_server(*, allow_throwaway: bool = True) -> ServerHandle:
    dsn = os.environ.get(DSN_VARIABLE)
    if dsn:
        server = db.PgServer.from_dsn(dsn)
        if not reachable(server):
            raise PostgresUnavailable(
                f"{DSN_VARIABLE} points at {server.describe()}, which does "
                f"not answer; start that server or {HOW_TO_PROVIDE}"
            )
        return ServerHandle(server)
    default = db.PgServer()
    if _port_open("127.0.0.1", 5432) and reachable(default):
        return ServerHandle(default)
    if allow_throwaway:
        return start_throwaway()
    raise PostgresUnavailable(f"no PostgreSQL answers on 127.0.0.1:5432; {HOW_TO_PROVIDE}")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def _run_as() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


def start_throwaway() -> ServerHandle:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not (initdb and pg_ctl):
        raise PostgresUnavailable(f"no PostgreSQL reachable and no initdb/pg_ctl found; {HOW_TO_PROVIDE}")
    base = Path(tempfile.mkdtemp(prefix="apim-upgrade-pg-"))
    user = _run_as()
    if user:
        shutil.chown(base, user=user)
    port = free_port()
    data = base / "data"
    process.run([initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"], user=user, timeout=120)
    process.run(
        [
            pg_ctl,
            "-D",
            data,
            "-l",
            base / "server.log",
            "-w",
            "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        user=user,
        timeout=120,
    )
    handle = ServerHandle(db.PgServer(host="127.0.0.1", port=port), throwaway_dir=base)
    if not reachable(handle.server):
        handle.stop()
        raise PostgresUnavailable(f"started a throwaway cluster in {base} but cannot connect; {HOW_TO_PROVIDE}")
    return handle
