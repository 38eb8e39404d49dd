"""Vendor SQL scripts: read, checksum and split into statements that know their line.

Splitting uses sqlparse, which keeps dollar-quoted bodies (``DO $$ ... $$``,
function bodies) whole. psql meta-commands cannot run through a driver and
are refused; transaction control is dropped on purpose because the runner
applies every script inside exactly one transaction of its own.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import sqlparse

from apim_upgrade.errors import ApimUpgradeError

_TRANSACTION_CONTROL = re.compile(
    r"^(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK)(\s+(WORK|TRANSACTION))?\s*;?$", re.I
)
_NOT_IN_TRANSACTION = re.compile(
    r"^(VACUUM|CREATE\s+DATABASE|DROP\s+DATABASE|CREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY|"
    r"DROP\s+INDEX\s+CONCURRENTLY|REINDEX\s+.*CONCURRENTLY|ALTER\s+SYSTEM|CREATE\s+TABLESPACE)\b",
    re.I,
)
_NAME = r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)(?:\s*\.\s*("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*))?'
_TOUCHES = [
    re.compile(rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_NAME}", re.I),
    re.compile(rf"^UPDATE\s+(?:ONLY\s+)?{_NAME}", re.I),
    re.compile(rf"^INSERT\s+INTO\s+{_NAME}", re.I),
    re.compile(rf"^DELETE\s+FROM\s+(?:ONLY\s+)?{_NAME}", re.I),
    re.compile(rf"^CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}", re.I),
    re.compile(rf"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}", re.I),
    re.compile(rf"^TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?{_NAME}", re.I),
    re.compile(rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+ON\s+(?:ONLY\s+)?{_NAME}", re.I),
]

# Verbs that can change a table's row count (an UPDATE or an ALTER cannot; a rewrite shows as
# a new relfilenode): the incremental gate counts the tables they name whatever the counters say.
_COUNT_VERBS = re.compile(r"^(INSERT|DELETE|TRUNCATE|MERGE|COPY)\b", re.I)


class ScriptError(ApimUpgradeError):
    """A script cannot be read, is out of order or contains something the runner will not execute."""

    exit_code = 8  # README: 8 = SQL script or drift


@dataclass(frozen=True)
class Statement:
    number: int  # 1-based, among executable statements
    line: int  # line of the statement's first SQL token in the file
    text: str

    @property
    def first_line(self) -> str:
        return self.text.strip().splitlines()[0][:200]

    def tables(self) -> set[str]:
        """Tables this statement writes or alters (lower-cased unless quoted)."""
        for pattern in _TOUCHES:
            m = pattern.match(self.text)
            if m:
                name = m.group(2) or m.group(1)
                return {name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()}
        return set()

    def count_targets(self) -> set[str]:
        """Tables this statement names as the target of a row-count-changing verb."""
        return self.tables() if _COUNT_VERBS.match(self.text.lstrip()) else set()


@dataclass(frozen=True)
class Script:
    path: Path
    from_version: str
    to_version: str
    sha256: str
    statements: list[Statement]
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, text) of dropped statements

    @property
    def name(self) -> str:
        return self.path.name

    def tables(self) -> set[str]:
        return set().union(*(s.tables() for s in self.statements)) if self.statements else set()

    def count_targets(self) -> set[str]:
        """Tables the script names as INSERT/DELETE/TRUNCATE targets (counted by its gate)."""
        return set().union(*(s.count_targets() for s in self.statements)) if self.statements else set()


def _strip_comments(text: str) -> str:
    return sqlparse.format(text, strip_comments=True).strip()


def _first_token_offset(parsed: sqlparse.sql.Statement) -> int:
    """Characters before the statement's first SQL token (whitespace and comments skipped)."""
    pos = 0
    for token in parsed.flatten():
        if not (token.is_whitespace or token.ttype in sqlparse.tokens.Comment):
            return pos
        pos += len(str(token))
    return 0


def load_script(path: Path, from_version: str, to_version: str) -> Script:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScriptError(f"cannot read SQL script {path}: {exc.strerror}; fix schema_upgrade.scripts") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScriptError(f"{path} is not UTF-8 text (byte {exc.start}); convert it") from None
    statements: list[Statement] = []
    skipped: list[tuple[int, str]] = []
    offset = 0
    for parsed in sqlparse.parse(text):
        chunk = str(parsed)
        start = offset
        offset += len(chunk)
        body = _strip_comments(chunk)
        if not body or body == ";":
            continue
        line = text.count("\n", 0, start + _first_token_offset(parsed)) + 1
        meta = [ln for ln in chunk.splitlines() if ln.lstrip().startswith("\\")]
        if meta and "$" not in body:
            raise ScriptError(
                f"{path}:{line}: psql meta-command '{meta[0].strip()}' cannot run through the driver; "
                "remove it (variables must be substituted beforehand) or run that part with psql"
            )
        if _TRANSACTION_CONTROL.match(body):
            skipped.append((line, body))  # the runner's own transaction replaces it
            continue
        if _NOT_IN_TRANSACTION.match(body):
            raise ScriptError(
                f"{path}:{line}: '{body.splitlines()[0][:80]}' cannot run inside a transaction, and each "
                "script is applied atomically; move it out of the script (run it separately afterwards)"
            )
        statements.append(Statement(len(statements) + 1, line, body.rstrip(";").rstrip()))
    if not statements:
        raise ScriptError(f"{path} holds no SQL statements; point schema_upgrade.scripts at the vendor script")
    return Script(path, from_version, to_version, hashlib.sha256(raw).hexdigest(), statements, skipped)
