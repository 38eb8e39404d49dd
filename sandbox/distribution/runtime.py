"""What every part of the stand-in server shares: home, console, config, failure plan, pacing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from sandbox.distribution.config import ServerConfig
from sandbox.distribution.console import Console
from sandbox.errors import SandboxError

FAIL_VARIABLE = "APIM_STANDIN_FAIL"
FAIL_STEP_VARIABLE = "APIM_STANDIN_FAIL_STEP"
SPEED_VARIABLE = "APIM_STANDIN_SPEED"
HTTP_PORT_VARIABLE = "APIM_STANDIN_HTTP_PORT"

# Test-only: SQL the run executes on its API-M database (one transaction, its own connection)
# at the end of the step named by APIM_STANDIN_EXTRA_SQL_STEP (every step when unset), so
# gate tests can make a "JVM step" change data the way a migration client would.
EXTRA_SQL_VARIABLE = "APIM_STANDIN_EXTRA_SQL"
EXTRA_SQL_STEP_VARIABLE = "APIM_STANDIN_EXTRA_SQL_STEP"

FAIL_MODES = ("exit-early", "hang", "errors", "mid-migration", "die-after-start")
STEPS = ("identity", "api", "pre", "start")


class ServerExit(BaseException):  # a request to exit, like SystemExit
    """Stop the server now with ``exit_code`` (the ERROR lines are already printed).

    Not an ApimUpgradeError: the migration clients log and swallow those (as the real
    ones do), while a crash or an early exit must always reach main().
    """

    def __init__(self, exit_code: int = 1) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


class ShutdownRequested(BaseException):
    """Raised from the SIGTERM/SIGINT handler to unwind into the shutdown sequence.

    A BaseException, like KeyboardInterrupt, so that no error handler swallows it and
    every open transaction is rolled back by its context manager on the way out.
    """


@dataclass(frozen=True)
class FailurePlan:
    """Which failure the tests asked for (APIM_STANDIN_FAIL) and in which run (…_FAIL_STEP)."""

    mode: str | None = None
    step: str | None = None

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> FailurePlan:
        mode = environ.get(FAIL_VARIABLE) or None
        step = environ.get(FAIL_STEP_VARIABLE) or None
        if mode is not None and mode not in FAIL_MODES:
            raise SandboxError(f"{FAIL_VARIABLE}={mode!r} is not one of {', '.join(FAIL_MODES)}")
        if step is not None and step not in STEPS:
            raise SandboxError(f"{FAIL_STEP_VARIABLE}={step!r} is not one of {', '.join(STEPS)}")
        return cls(mode, step)

    def at(self, step: str, mode: str) -> bool:
        """True when ``mode`` was requested and applies to this ``step``."""
        return self.mode == mode and (self.step is None or self.step == step)


@dataclass
class Context:
    carbon_home: Path
    version: str  # product version of this pack, e.g. "4.2.0"
    console: Console
    config: ServerConfig
    properties: dict[str, str]  # the -D system properties
    failure: FailurePlan = field(default_factory=FailurePlan)
    speed: float = 1.0
    started: float = field(default_factory=time.monotonic)

    def pause(self, seconds: float) -> None:
        """An artificial delay (the real server is slower), divided by APIM_STANDIN_SPEED."""
        time.sleep(seconds / self.speed)

    def hang(self) -> NoReturn:
        """Stop making progress forever; only a signal ends this (as with a stuck JVM)."""
        while True:
            time.sleep(3600)

    def flag(self, name: str) -> bool:
        """A -D flag is on when given bare (-Dmigrate) or with any value but false."""
        return name in self.properties and self.properties[name].lower() != "false"

    @property
    def dbscripts(self) -> Path:
        return self.carbon_home / "dbscripts"


def run_extra_sql(ctx: Context, step: str) -> None:
    """Run APIM_STANDIN_EXTRA_SQL on the API-M database if it applies to ``step`` (tests only)."""
    import os

    from apim_upgrade.postgres import db

    text = os.environ.get(EXTRA_SQL_VARIABLE)
    wanted = os.environ.get(EXTRA_SQL_STEP_VARIABLE)
    source = ctx.config.apim_db
    if not text or (wanted and wanted != step) or source.server is None or source.dbname is None:
        return
    with db.session(source.server, source.dbname) as conn:
        db.execute_script(conn, text)
