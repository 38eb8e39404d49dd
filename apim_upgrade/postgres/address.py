"""Where a PostgreSQL server is and who we are on it: a value the plan can hold without a connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from apim_upgrade.errors import DatabaseError

APPLICATION_NAME = "apim-upgrade"


@dataclass(frozen=True)
class PgServer:
    """Where the PostgreSQL server is and who we are on it (password kept secret)."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: SecretStr | None = field(default=None, repr=False)
    sslmode: str | None = None
    connect_timeout: int = 10

    @classmethod
    def from_dsn(cls, dsn: str) -> PgServer:
        """Parse a libpq DSN or URL (``postgresql://user@host:port/db``)."""
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise DatabaseError(
                f"cannot parse PostgreSQL DSN: {exc}. "
                "Give it as postgresql://USER@HOST:PORT/ or 'host=... port=... user=...'"
            ) from None
        password = params.get("password")
        return cls(
            host=str(params.get("host") or "127.0.0.1"),
            port=int(params.get("port") or 5432),
            user=str(params.get("user") or "postgres"),
            password=SecretStr(str(password)) if password else None,
            sslmode=str(params["sslmode"]) if params.get("sslmode") else None,
        )

    def describe(self) -> str:
        """Address for messages: never includes the password."""
        return f"{self.user}@{self.host}:{self.port}"

    def conninfo(self, dbname: str, **extra: Any) -> str:
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": dbname,
            "connect_timeout": self.connect_timeout,
            "application_name": APPLICATION_NAME,
        }
        if self.password is not None:
            params["password"] = self.password.get_secret_value()
        if self.sslmode:
            params["sslmode"] = self.sslmode
        params.update(extra)
        return make_conninfo("", **params)

    def tool_conninfo(self, dbname: str, application_name: str = APPLICATION_NAME) -> str:
        """Connection string for a client program (pg_dump, pg_restore): never holds the password.

        Always a full ``key=value`` string, so a database name holding ``=`` or spaces stays a name.
        """
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": dbname,
            "connect_timeout": self.connect_timeout,
            "application_name": application_name[:63],
        }
        if self.sslmode:
            params["sslmode"] = self.sslmode
        return make_conninfo("", **params)

    def tool_environment(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` plus PGPASSWORD when the plan gave a password: a child's environment, never its argv.

        Without one, the child finds credentials as libpq does for our own sessions (PGPASSWORD, .pgpass).
        """
        env = dict(base)
        if self.password is not None:
            env["PGPASSWORD"] = self.password.get_secret_value()
        return env

    def sqlalchemy_url(self, dbname: str, password_placeholder: str | None = None) -> str:
        """URL for GX/SQLAlchemy. The password is only ever a ``${VAR}`` placeholder."""
        auth = quote(self.user, safe="")
        if self.password is not None and password_placeholder:
            auth += ":${" + password_placeholder + "}"
        query = f"?sslmode={self.sslmode}" if self.sslmode else ""
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}{query}"
