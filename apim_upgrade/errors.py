"""The one error hierarchy of apim-upgrade.

Every message says what went wrong *and* what to do about it; the CLI prints
``FAILED: <message>`` once and exits non-zero (``--traceback`` shows the rest).
Errors stay picklable (plain args) because Prefect serialises task failures.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager


class ApimUpgradeError(Exception):
    """Root of every error this tool raises on purpose."""

    exit_code = 1


class PlanError(ApimUpgradeError):
    """The plan file is missing, unreadable or invalid."""

    exit_code = 2


class PreflightError(ApimUpgradeError):
    """One or more preflight checks failed; each finding is one line."""

    exit_code = 3

    def __init__(self, findings: list[str]) -> None:
        # One finding stays on one line (the CLI prints a single FAILED line); several are listed.
        if len(findings) == 1:
            super().__init__(f"preflight found problems: {findings[0]}")
        else:
            super().__init__("preflight found problems:\n" + "\n".join(f"  - {f}" for f in findings))
        self.findings = findings

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        return (type(self), (self.findings,))


class DatabaseError(ApimUpgradeError):
    """A database operation failed; the message names database, step and fix."""


class DatabaseUnavailable(DatabaseError):
    """The server could not be reached (transient: tasks retry it)."""

    exit_code = 3  # the same code whichever command meets it: plan check, run, rehearse, rollback


class LoginRefused(DatabaseError):
    """The server refused the login or the database does not exist (permanent: never retried)."""

    exit_code = 3


class PostgresUnavailable(ApimUpgradeError):
    """No PostgreSQL server could be reached or started."""


class GateFailed(ApimUpgradeError):
    """A Great Expectations gate failed; lists every failed expectation."""

    exit_code = 4

    def __init__(self, gate: str, failures: list[str], docs: str | None = None) -> None:
        lines = [f"quality gate '{gate}' failed ({len(failures)} expectation(s)):"]
        lines += [f"  - {f}" for f in failures]
        if docs:
            lines.append(f"  Data Docs: {docs}")
        super().__init__("\n".join(lines))
        self.gate, self.failures, self.docs = gate, failures, docs

    def __reduce__(self) -> tuple[type, tuple[str, list[str], str | None]]:
        return (type(self), (self.gate, self.failures, self.docs))


class DiskFull(ApimUpgradeError):
    """A file could not be written for lack of space; nothing half-written was left behind."""

    exit_code = 11

    @classmethod
    def writing(cls, path: object, needed: int | None = None) -> DiskFull:
        need = f" (about {needed // 1024 + 1} kB more)" if needed else ""
        return cls(
            f"no space left on the device writing {path}{need}; free space there (or move work_dir) and "
            "rerun the same command: it resumes where it stopped"
        )


def disk_full_in(exc: BaseException) -> DiskFull | None:
    """DiskFull for ``exc`` if a full disk is what it comes down to, however a library wrapped it
    (GX, for one, raises its own scaffolding error from the OSError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFull):
            return current
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return DiskFull.writing(current.filename or "a file of this run")
        current = current.__cause__ or current.__context__
    return None


class AuditError(ApimUpgradeError):
    """The audit trail is unreadable or its hash chain is broken."""

    exit_code = 5


# Set by the CLI, which prints this tool's errors itself (``FAILED: ...`` on stderr).
_CLI_REPORTS_FAILURES = False
# An error already logged as ``FAILED: ...`` by a flow carries this attribute; Prefect's own
# records of it ("Encountered exception", "Engine execution exited ...") are then dropped.
_LOGGED = "_apim_upgrade_failed_logged"


def cli_reports_failures() -> None:
    """The CLI prints ``FAILED: ...`` itself: flows it runs must not log that line again."""
    global _CLI_REPORTS_FAILURES
    _CLI_REPORTS_FAILURES = True


def hide_known_tracebacks() -> None:
    """Keep Prefect's run loggers from printing a stack for this tool's own errors.

    The CLI prints such an error once as ``FAILED: ...``; Prefect would log it again with a
    traceback (the flow run's "Encountered exception"), burying that line. The message stays
    in the log; only the stack of an expected error is dropped (``--traceback`` shows it).
    An error a flow already logged as ``FAILED: ...`` (``failures_logged_once``) is not logged again.
    """

    class _KnownErrorFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.exc_info and isinstance(record.exc_info[1], ApimUpgradeError):
                if getattr(record.exc_info[1], _LOGGED, False):
                    return False
                record.exc_info, record.exc_text = None, None
            return True

    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(type(f).__name__ == "_KnownErrorFilter" for f in logger.filters):
            logger.addFilter(_KnownErrorFilter())


@contextmanager
def failures_logged_once(logger: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> Iterator[None]:
    """Outside the CLI (a deployment run on a worker), the flow's log is where a failure is read.

    This tool's own error is logged there exactly as the CLI prints it, one ``FAILED: <message>``
    line at ERROR, and Prefect's records of the same error (with their tracebacks) are dropped.
    Under the CLI this does nothing: the CLI prints the line itself. Other errors pass untouched.
    """
    if _CLI_REPORTS_FAILURES:
        yield
        return
    hide_known_tracebacks()
    try:
        yield
    except ApimUpgradeError as exc:
        if not getattr(exc, _LOGGED, False):
            logger.error("FAILED: %s", exc)
            setattr(exc, _LOGGED, True)
        raise


class WindowFailed(ApimUpgradeError):
    """A failure inside the cutover window: the original message, then how to get back (one line).

    Keeps the exit code of the failure it wraps, so the same failure gives the same code.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @classmethod
    def wrapping(cls, exc: ApimUpgradeError, how_back: str) -> WindowFailed:
        first = str(exc).strip().replace("\n", " ")
        return cls(f"{first} — {how_back}", exc.exit_code)

    def __reduce__(self) -> tuple[type, tuple[str, int]]:
        return (type(self), (str(self), self.exit_code))
