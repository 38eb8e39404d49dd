"""The traffic ledger: what the estate's clients saw, one JSON line per call, append-only.

A client of the estate (the sandbox's traffic generator, or an operator's own synthetic
monitor) appends one line per call it made: when it sent it, how long the answer took,
whether it succeeded, and for a write the control plane acknowledged, what was written and
the key that finds it in the database (``wrote``). A failed call is a line too, with its
HTTP status (null: no answer at all, e.g. connection refused) and the error. So the ledger
proves, after a cutover, that every acknowledged write reached the 4.4.0 databases and that
a write attempted inside the window was refused, not silently dropped. The plan names it
(``[report] traffic_ledger``) and the report draws it (``report_traffic``).

Lines never hold a secret: no token, client secret or password; a token is found by its
``access_token_hash`` (SHA-256, as IDN_OAUTH2_ACCESS_TOKEN stores it).

Format (version 1), one object per line::

    {"v": 1, "at": "2026-01-01T02:00:00.123456+00:00", "seconds": 0.012, "call": "token",
     "target": "http://127.0.0.1:9863/oauth2/token", "ok": true, "status": 200, "error": null,
     "wrote": {"database": "apim", "table": "idn_oauth2_access_token",
               "key": {"access_token_hash": "9f86d0..."}}}

``database`` is the plan's role (``apim`` or ``shared``: ``[databases.<role>]``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from apim_upgrade.errors import ApimUpgradeError

VERSION = 1


class LedgerError(ApimUpgradeError):
    """A ledger line that is not a ledger entry."""


@dataclass(frozen=True)
class Written:
    """A row the control plane acknowledged: where it is and the columns that find it."""

    database: str  # the plan's role: "apim" or "shared"
    table: str
    key: dict[str, str]


@dataclass(frozen=True)
class LedgerEntry:
    at: datetime  # when the call was sent (timezone-aware)
    seconds: float  # until the answer (or the failure)
    call: str  # what was called: "token", "application", "keys", "subscription", "invoke", ...
    target: str  # the URL, without query or credentials
    ok: bool
    status: int | None = None  # HTTP status; None when nothing answered
    error: str | None = None
    wrote: Written | None = None  # set only when a write was acknowledged

    @property
    def acknowledged_write(self) -> bool:
        return self.ok and self.wrote is not None

    @property
    def ended(self) -> datetime:
        return self.at + timedelta(seconds=self.seconds)

    def to_json(self) -> str:
        body: dict[str, Any] = {"v": VERSION, **asdict(self), "at": self.at.isoformat()}
        return json.dumps(body, separators=(",", ":"), sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> LedgerEntry:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise ValueError(f"not a version {VERSION} ledger entry")
        at = datetime.fromisoformat(str(data["at"]))
        if at.tzinfo is None:
            raise ValueError("'at' has no time zone")
        wrote = data.get("wrote")
        return cls(
            at=at,
            seconds=float(data["seconds"]),
            call=str(data["call"]),
            target=str(data["target"]),
            ok=bool(data["ok"]),
            status=None if data.get("status") is None else int(data["status"]),
            error=None if data.get("error") is None else str(data["error"]),
            wrote=Written(str(wrote["database"]), str(wrote["table"]), dict(wrote["key"])) if wrote else None,
        )


def append(path: Path, entry: LedgerEntry) -> None:
    """Append one line with one write(2) on an O_APPEND file: lines of several writers never interleave."""
    line = (entry.to_json() + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_ledger(path: Path) -> list[LedgerEntry]:
    """Every entry of the ledger at ``path``, in file order.

    A torn last line (the writer was killed mid-write) is skipped; any other bad line is an
    error naming the file and the line.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise LedgerError(
            f"cannot read the traffic ledger {path}: {exc.strerror}; fix [report] traffic_ledger in the plan"
        ) from None
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entries.append(LedgerEntry.from_json(line))
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines):  # no newline after it
                break  # the writer stopped mid-line
            raise LedgerError(f"{path}:{number}: not a traffic ledger entry ({exc}); remove or fix that line") from None
    return entries
