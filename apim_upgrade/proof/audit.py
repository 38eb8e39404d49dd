"""The data-integrity audit trail.

Two durable copies of the same records:

* an append-only JSONL file in the work directory, where every record carries
  the SHA-256 of the previous one (any edited, removed or reordered line
  breaks the chain), and
* the ``apim_upgrade.audit_log`` table inside the target API-M database, like
  Flyway's schema history table, so the proof travels with the migrated data.

Records are written through :func:`append_record` only. Secrets never reach
it: values under secret-looking keys are masked before hashing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from apim_upgrade.errors import AuditError, DiskFull
from apim_upgrade.postgres import bookkeeping, db, queries
from apim_upgrade.redact import mask_secrets
from apim_upgrade.runtime.atomic import copy_atomically, write_atomically
from apim_upgrade.runtime.identity import default_actor

GENESIS = "0" * 64


class AuditRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int
    plan: str
    plan_digest: str
    flow_run_id: str | None
    phase: str
    step: str
    started_at: datetime
    ended_at: datetime | None
    actor: str
    inputs_digest: str
    outcome: str  # started | succeeded | failed | skipped
    gates: list[dict[str, Any]]
    details: dict[str, Any]
    prev_sha256: str
    sha256: str


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def digest_of(data: Any) -> str:
    """Stable SHA-256 of any JSON-able value (used for step inputs)."""
    return hashlib.sha256(canonical(mask_secrets(data)).encode()).hexdigest()


def _record_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def trail_lock(path: Path) -> AbstractContextManager[None]:
    """The trail's file lock, as appends hold it (readers that need a whole trail take it too)."""
    return _locked(path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_record(
    path: Path,
    *,
    plan: str,
    plan_digest: str,
    phase: str,
    step: str,
    started_at: datetime,
    ended_at: datetime | None,
    outcome: str,
    inputs: Any = None,
    gates: list[dict[str, Any]] | None = None,
    details: dict[str, Any] | None = None,
    flow_run_id: str | None = None,
    actor: str | None = None,
) -> AuditRecord:
    """Append one hash-chained record (file lock held: concurrent writers stay ordered)."""
    with _locked(path):
        last = _last_record(path)
        body: dict[str, Any] = {
            "seq": (last.seq + 1) if last else 1,
            "plan": plan,
            "plan_digest": plan_digest,
            "flow_run_id": flow_run_id,
            "phase": phase,
            "step": step,
            "started_at": started_at.isoformat(),
            "ended_at": ended_at.isoformat() if ended_at else None,
            "actor": actor or default_actor(),
            "inputs_digest": digest_of(inputs),
            "outcome": outcome,
            "gates": mask_secrets(gates or []),
            "details": mask_secrets(details or {}),
            "prev_sha256": last.sha256 if last else GENESIS,
        }
        body = json.loads(canonical(body))  # exactly what will be hashed and re-read
        body["sha256"] = _record_hash(body)
        _append_line(path, canonical(body) + "\n")
    return AuditRecord.model_validate(body)


def _append_line(path: Path, line: str) -> None:
    """Append one whole line or nothing: a failed write (a full disk) is cut back off the file."""
    data = line.encode("utf-8")
    # Unbuffered: a buffered file would retry its flush (and fail again) before truncating.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)  # the trail ends at its last whole record again
            if exc.errno == errno.ENOSPC:
                raise DiskFull.writing(path, len(data)) from None
            raise
    finally:
        os.close(fd)


def _cut_torn_append(path: Path) -> int:
    """A crash mid-append leaves a last line with no newline: roll it back (it was never a record)."""
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        if end == 0:
            return 0
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return 0
        pos = end
        while pos > 0:
            step = min(4096, pos)
            pos -= step
            fh.seek(pos)
            cut = fh.read(step).rfind(b"\n")
            if cut >= 0:
                keep = pos + cut + 1
                break
        else:
            keep = 0
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return end - keep


def _last_record(path: Path) -> AuditRecord | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    _cut_torn_append(path)  # under the append lock: no writer is mid-line now
    if path.stat().st_size == 0:
        return None
    with open(path, "rb") as fh:
        # Read backwards to the last line: the trail may grow large.
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        chunk = b""
        pos = end
        while pos > 0 and chunk.count(b"\n") < 2:
            step = min(4096, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step) + chunk
        lines = [ln for ln in chunk.splitlines() if ln.strip()]
    try:
        return AuditRecord.model_validate_json(lines[-1])
    except ValueError as exc:
        raise AuditError(
            f"{path}: last line is not a valid audit record ({exc.__class__.__name__}); "
            "run `apim-upgrade audit verify`, then `apim-upgrade audit repair PLAN` to rebuild it from its "
            "database copy"
        ) from None


def read_records(path: Path) -> list[AuditRecord]:
    """Every record in file order (raises AuditError on a malformed line)."""
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                break  # a torn append (crash, full disk): never a record; the next append cuts it off
            try:
                out.append(AuditRecord.model_validate_json(line))
            except ValueError:
                raise AuditError(
                    f"{path}:{lineno}: not a valid audit record; the trail was edited by hand. "
                    "Rebuild it from its database copy: apim-upgrade audit repair PLAN"
                ) from None
    return out


def verify_chain(path: Path) -> list[str]:
    """Problems in the hash chain, one line each (empty list: intact)."""
    if not path.exists():
        return [f"{path}: no audit trail here; give the work directory of a run"]
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                problems.append(
                    f"line {lineno}: an interrupted append ({len(line.encode())} bytes, no record); the next "
                    "run cuts it off, or `apim-upgrade audit repair PLAN` does now"
                )
                break
            try:
                body = json.loads(line)
                stored = body.pop("sha256")
            except (ValueError, KeyError, AttributeError):
                problems.append(f"line {lineno}: not a JSON audit record (edited by hand?)")
                prev, expected_seq = "?", expected_seq + 1
                continue
            if _record_hash(body) != stored:
                problems.append(f"line {lineno} (seq {body.get('seq')}): content does not match its hash (edited)")
            if body.get("prev_sha256") != prev and prev != "?":
                problems.append(
                    f"line {lineno} (seq {body.get('seq')}): does not follow the previous line "
                    "(a record was removed, inserted or reordered)"
                )
            if body.get("seq") != expected_seq:
                problems.append(f"line {lineno}: sequence {body.get('seq')}, expected {expected_seq}")
            prev, expected_seq = stored, (body.get("seq") or expected_seq) + 1
    return problems


# --- the database copy ---------------------------------------------------------


def sync_to_database(server: db.PgServer, dbname: str, records: list[AuditRecord]) -> int:
    """Insert the records the history table lacks; returns how many were added."""
    with db.session(server, dbname) as conn:
        bookkeeping.ensure(conn)
        known = {seq for seq, _ in db.fetch_all(conn, queries.audit_hashes())}
        added = 0
        for rec in records:
            if rec.seq in known:
                continue
            params = rec.model_dump(mode="json")
            params["record"] = canonical(params)
            db.execute(conn, queries.insert_audit_record(), params)
            added += 1
    return added


def compare_with_database(server: db.PgServer, dbname: str, records: list[AuditRecord]) -> list[str]:
    """Differences between the file and the database copy of the trail."""
    with db.session(server, dbname, read_only=True) as conn:
        if not bookkeeping.present(conn).has("audit_log"):
            return [f"database '{dbname}' holds no apim_upgrade.audit_log yet"]
        in_db = dict(db.fetch_all(conn, queries.audit_hashes()))
    problems = []
    in_file = {r.seq: r.sha256 for r in records}
    for seq, sha in sorted(in_db.items()):
        if seq not in in_file:
            problems.append(f"seq {seq} is in the database history but missing from the file")
        elif in_file[seq] != sha:
            problems.append(f"seq {seq} differs between the file and the database history")
    return problems


def pending_copies(path: Path) -> set[str]:
    """Targets whose copy was started (intent recorded) but never finished.

    The intent record is written before CREATE DATABASE, so a copy killed
    between CREATE and its ownership marker is still known to be ours.
    """
    last: dict[str, str] = {}
    for rec in read_records(path):
        target = rec.details.get("target")
        if rec.step == "copy_database" and isinstance(target, str):
            last[target] = rec.outcome
    return {t for t, outcome in last.items() if outcome in ("started", "failed")}


def database_records(server: db.PgServer, dbname: str) -> list[AuditRecord]:
    """The trail as the target database holds it, in order (empty if it holds none)."""
    with db.session(server, dbname, read_only=True) as conn:
        if not bookkeeping.present(conn).has("audit_log"):
            return []
        rows = db.fetch_all(conn, queries.audit_records())
    return [AuditRecord.model_validate(row[0]) for row in rows]


def _intact_prefix(path: Path) -> list[AuditRecord]:
    """The file's records up to the first one that is torn, edited or out of chain."""
    good: list[AuditRecord] = []
    if not path.exists():
        return good
    prev = GENESIS
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.endswith("\n") or not line.strip():
                break
            try:
                rec = AuditRecord.model_validate_json(line)
            except ValueError:
                break
            body = json.loads(line)
            body.pop("sha256", None)
            if rec.prev_sha256 != prev or _record_hash(body) != rec.sha256:
                break
            good.append(rec)
            prev = rec.sha256
    return good


def repair(path: Path, server: db.PgServer, dbname: str) -> tuple[int, int, Path | None]:
    """Rebuild the file from its database copy plus the file's own intact records beyond it.

    The chain is verified before the file is replaced (atomically); the damaged file is kept
    beside it. Returns (records from the database, records kept from the file, damaged copy).
    """
    with _locked(path):
        from_db = database_records(server, dbname)
        problems = _chain_problems(from_db)
        if problems:
            raise AuditError(
                f"the database copy of the trail in '{dbname}' does not verify ({problems[0]}); "
                "it cannot be used to repair the file: keep both and investigate"
            )
        from_file = _intact_prefix(path)
        by_seq = {r.seq: r for r in from_file}
        for rec in from_db:
            other = by_seq.get(rec.seq)
            if other is not None and other.sha256 != rec.sha256:
                raise AuditError(
                    f"{path} and the database copy disagree at seq {rec.seq}; neither can repair the other: "
                    "keep both and investigate"
                )
        merged = list(from_db) + [r for r in from_file if not from_db or r.seq > from_db[-1].seq]
        if _chain_problems(merged):
            merged = list(from_db)  # the file's tail does not follow the database's: the database wins
        text = "".join(_line_of(r) + "\n" for r in merged)
        damaged = None
        if path.exists() and path.read_bytes() != text.encode():
            # Kept for the investigation; the trail itself is replaced only by a whole, verified file.
            damaged = path.with_name(f"{path.name}.damaged-{datetime.now().strftime('%Y%m%dT%H%M%S')}")
            copy_atomically(path, damaged)
        write_atomically(path, text)
        if verify_chain(path):
            raise AuditError(f"{path}: the rebuilt trail does not verify; the damaged file is kept at {damaged}")
    return len(from_db), len(merged) - len(from_db), damaged


def _line_of(rec: AuditRecord) -> str:
    """The record exactly as append_record wrote it (datetimes as isoformat(), canonical JSON)."""
    body = rec.model_dump(mode="python")
    for key in ("started_at", "ended_at"):
        if body[key] is not None:
            body[key] = body[key].isoformat()
    return canonical(json.loads(canonical(body)))


def _chain_problems(records: list[AuditRecord]) -> list[str]:
    prev, problems = GENESIS, []
    for expected, rec in enumerate(records, 1):
        body = json.loads(_line_of(rec))
        body.pop("sha256")
        if rec.seq != expected or rec.prev_sha256 != prev or _record_hash(body) != rec.sha256:
            problems.append(f"seq {rec.seq} does not follow seq {expected - 1}")
        prev = rec.sha256
    return problems
