"""Console and log-file output in WSO2 Carbon's log4j2 layouts.

The patterns are the product's own (shared/wso2/console-reference.md §1):

* console (``CARBON_CONSOLE``): ``[%d{DEFAULT}] %5p - %c{1} %m%n``
* file (``CARBON_LOGFILE``): ``TID: [%tenantId] [%appName] [%d] %5p {%c} - %m%ex%n``

so anything that watches a real server's output (markers, ERROR counting)
works unchanged on the stand-in. ``Shutdown complete`` and ``Halting JVM`` go
through java.util.logging in the product, so they are printed in JUL's
default two-line layout instead (``jul``).

Secrets: the stand-in never formats a secret into a message, and as a second
line of defence every registered secret is masked before anything is written.
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import TextIO

SUPER_TENANT_ID = -1234
_MASK = "********"
# Secrets shorter than this are not masked: masking "admin" or "wso2" would garble
# ordinary words (user names, file names) without protecting anything.
_MIN_MASKED_SECRET = 6

# Simple class name (console %c{1}) -> full logger name (file %c).
LOGGERS = {
    "CarbonCoreActivator": "org.wso2.carbon.core.internal.CarbonCoreActivator",
    "CarbonCoreServiceComponent": "org.wso2.carbon.core.internal.CarbonCoreServiceComponent",
    "CarbonServerManager": "org.wso2.carbon.core.init.CarbonServerManager",
    "CarbonUIServiceComponent": "org.wso2.carbon.ui.internal.CarbonUIServiceComponent",
    "StartupFinalizerServiceComponent": "org.wso2.carbon.core.internal.StartupFinalizerServiceComponent",
    "ConfigParser": "org.wso2.config.mapper.ConfigParser",
    "DataSourceRepository": "org.wso2.carbon.ndatasource.core.DataSourceRepository",
    "IndexingManager": "org.wso2.carbon.registry.indexing.IndexingManager",
    "IdentityCoreServiceComponent": "org.wso2.carbon.identity.core.internal.IdentityCoreServiceComponent",
    "MigrationClientImpl": "org.wso2.carbon.is.migration.MigrationClientImpl",
    "APIMMigrationServiceComponent": ("org.wso2.carbon.apimgt.migration.client.internal.APIMMigrationServiceComponent"),
    "APIMMigrationClient": "org.wso2.carbon.apimgt.migration.APIMMigrationClient",
    "V410Migration": "org.wso2.carbon.apimgt.migration.migrator.client.V410Migration",
    "V420Migration": "org.wso2.carbon.apimgt.migration.migrator.client.V420Migration",
    "PreDBScriptMigrator": "org.wso2.carbon.apimgt.migration.migrator.commonMigrators.PreDBScriptMigrator",
    "PostDBScriptMigrator": "org.wso2.carbon.apimgt.migration.migrator.commonMigrators.PostDBScriptMigrator",
    "RegistryResourceMigrator": ("org.wso2.carbon.apimgt.migration.migrator.commonMigrators.RegistryResourceMigrator"),
    "V420RegistryResourceMigrator": ("org.wso2.carbon.apimgt.migration.migrator.v420.V420RegistryResourceMigrator"),
    "ArtifactReIndexingMigrator": (
        "org.wso2.carbon.apimgt.migration.migrator.commonMigrators.ArtifactReIndexingMigrator"
    ),
    "ValidationHandler": "org.wso2.carbon.apimgt.migration.validator.ValidationHandler",
    "APIValidator": "org.wso2.carbon.apimgt.migration.validator.validators.APIValidator",
}


def timestamp(now: datetime | None = None) -> str:
    """log4j2 ``%d{DEFAULT}``: ``yyyy-MM-dd HH:mm:ss,SSS`` in local time."""
    now = now or datetime.now()
    return now.strftime("%Y-%m-%d %H:%M:%S,") + f"{now.microsecond // 1000:03d}"


def console_line(level: str, logger: str, message: str, now: datetime | None = None) -> str:
    """One CARBON_CONSOLE line (without the newline)."""
    return f"[{timestamp(now)}] {level:>5} - {logger} {message}"


def file_line(level: str, logger: str, message: str, now: datetime | None = None) -> str:
    """One CARBON_LOGFILE line; tenant -1234 and an empty app name, as during startup."""
    full = LOGGERS.get(logger, logger)
    return f"TID: [{SUPER_TENANT_ID}] [] [{timestamp(now)}] {level:>5} {{{full}}} - {message}"


class Console:
    """Writes each record to stdout (console layout) and wso2carbon.log (file layout)."""

    def __init__(self, log_file: Path | None, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._log_file = log_file
        self._lock = threading.Lock()
        self._secrets: set[str] = set()

    def add_secret(self, value: str) -> None:
        if len(value) >= _MIN_MASKED_SECRET:
            self._secrets.add(value)

    def info(self, logger: str, message: str) -> None:
        self.log("INFO", logger, message)

    def warn(self, logger: str, message: str) -> None:
        self.log("WARN", logger, message)

    def error(self, logger: str, message: str) -> None:
        self.log("ERROR", logger, message)

    def log(self, level: str, logger: str, message: str) -> None:
        message = self._mask(message)
        now = datetime.now()
        with self._lock:
            self._write(console_line(level, logger, message, now) + "\n")
            self._append(file_line(level, logger, message, now) + "\n")

    def jul(self, source: str, message: str) -> None:
        """java.util.logging SimpleFormatter's default layout (two lines), console only."""
        now = datetime.now()
        hour = now.hour % 12 or 12
        stamp = now.strftime("%b %d, %Y ") + f"{hour}:{now:%M:%S} {'AM' if now.hour < 12 else 'PM'}"
        with self._lock:
            self._write(f"{stamp} {source}\nINFO: {self._mask(message)}\n")

    def raw(self, text: str) -> None:
        """Unformatted output (what the JVM itself prints, e.g. on a crash)."""
        with self._lock:
            self._write(self._mask(text) + "\n")

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            # Nobody reads our output any more (caller gone): keep running, as the JVM does.
            pass

    def _append(self, text: str) -> None:
        if self._log_file is None:
            return
        try:
            with self._log_file.open("a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError:
            # log4j2 reports an unwritable log file once and carries on; so do we.
            self._log_file = None
