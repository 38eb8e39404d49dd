"""What every benchmark shares: the run's context, sandboxes per scale, timing with peak memory.

One ``Context`` per run: one PostgreSQL, one throwaway ``prefect server`` already
running (as in production), one temporary directory, one sandbox estate per scale
(built once, shared by the benchmarks of that scale; each derives its own plan
from it), and the result rows every benchmark appends to.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apim_upgrade.plan import load_plan  # noqa: E402
from apim_upgrade.postgres import db, queries  # noqa: E402
from apim_upgrade.postgres.catalog import take_snapshot  # noqa: E402
from sandbox.pgserver import ServerHandle, find_server  # noqa: E402
from sandbox.prefect_server import free_port, start_prefect_server, stop_prefect_server  # noqa: E402

SHARED_WSO2 = next(
    (p for p in (ROOT.parent / "shared/wso2", Path("/work/shared/wso2")) if (p / "dbscripts").is_dir()),
    None,
)
DBSCRIPTS_ROOT = SHARED_WSO2 / "dbscripts" if SHARED_WSO2 else ROOT / "sandbox" / "sql" / "compact"
QUIET = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "False"}
RSS_METHOD = (
    "peak RSS = the kernel's high-water mark (VmHWM in /proc/PID/status) of each process, read every "
    "0.1 s from the start of the measured command to its end for the command and all its descendants "
    "(and stand-in servers started under the sandbox directory); 'flow' is the apim-upgrade process "
    "itself, 'stand-in' the largest stand-in WSO2 server, 'embedded API' Prefect's ephemeral server. "
    "A process living less than 0.1 s can be missed."
)


@dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    scale: int
    baseline: str  # what the floor is
    baseline_s: float | None
    measured_s: float
    target: str
    target_ratio: float | None  # ratio must be <= this; None: judged elsewhere (met given)
    met_override: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.measured_s / self.baseline_s if self.baseline_s else None

    @property
    def met(self) -> bool | None:
        if self.met_override is not None:
            return self.met_override
        if self.target_ratio is None or self.ratio is None:
            return None
        return self.ratio <= self.target_ratio


TARGET_SCALE = 100  # the phase targets are stated at scale 100; smaller scales show the trend


def target_at(scale: int, ratio: float) -> float | None:
    """The ratio a row is judged against: only at the scale the target is stated for."""
    return ratio if scale == TARGET_SCALE else None


@dataclass
class Estate:
    """A sandbox built at one scale, and the size of its sources (the data the cost should follow)."""

    scale: int
    plan_path: Path
    rows: int
    bytes: int
    tokens: int
    with_distribution: bool


@dataclass
class Context:
    server: db.PgServer
    work: Path
    prefect_url: str
    prefect_home: Path
    dbscripts: Path | None  # WSO2's own 4.0.0 DDL when available, else the compact schema
    estates: dict[int, Estate] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    extras: dict[str, list[str]] = field(default_factory=dict)
    needs_distribution: bool = False
    profile_dir: Path | None = None  # --profile: pyinstrument reports of the measured CLI runs (slower)
    reps: int = 2
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)  # scale -> (rows, bytes) of the sources
    handle: ServerHandle | None = None  # the server; a throwaway cluster (--cluster throwaway) can be restarted
    cold_methods: dict[str, str] = field(default_factory=dict)  # mode -> how chill() emptied the caches
    store: dict[str, dict[int, Any]] = field(default_factory=dict)  # figures kept across scales, per key
    scales: list[int] = field(default_factory=list)  # every scale of this run (ascending)

    def chill(self, *, restart: bool = True) -> None:
        """Cold caches before a measured side: restart the throwaway cluster, then drop the OS page cache.

        ``restart=False`` drops the OS page cache only: the cluster keeps its shared_buffers (128 MB by
        default) and, what matters to the incremental gates, its statistics epoch (a restart makes them
        count every table once: counters may be lost across a restart). ``sync; echo 3 >
        /proc/sys/vm/drop_caches`` needs root and a writable /proc/sys; where that is refused, the
        closest substitute is used and named in ``cold_methods``.
        """
        if self.handle is None or self.handle.throwaway_dir is None:
            raise SystemExit("cold-cache figures need a cluster the benchmark starts itself: --cluster throwaway")
        if restart:
            self.handle.restart("fast")
        os.sync()
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            how = "`sync; echo 3 > /proc/sys/vm/drop_caches` (as root)"
        except OSError as exc:
            _evict_page_cache(self.work)
            how = (
                f"drop_caches refused ({exc.strerror}): the page cache evicted by reading an unrelated file "
                "as large as the available memory (an approximation)"
            )
        key = "cold" if restart else "cold-os"
        first = "throwaway cluster restarted (pg_ctl restart -m fast: shared_buffers empty), then " if restart else ""
        self.cold_methods[key] = f"{first}{how}, before each measured side"

    @property
    def server_version(self) -> str:
        with db.session(self.server, "postgres", read_only=True) as conn:
            row = db.fetch_one(conn, queries.SERVER_VERSION)
        return str(row[1]).split(" on ")[0] if row else "?"

    def release(self, scale: int) -> None:
        """Destroy the estate of ``scale`` (its sources, copies and nodes): the next scale gets the disk."""
        from sandbox.create import destroy_sandbox

        estate = self.estates.pop(scale, None)
        if estate is not None:
            destroy_sandbox(estate.plan_path)

    def env(self, *, embedded: bool = False, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment of a measured command: quiet, private PREFECT_HOME, the running server unless embedded."""
        env = dict(os.environ, **QUIET, PREFECT_HOME=str(self.prefect_home), **(extra or {}))
        env.pop("PREFECT_API_URL", None)
        if not embedded:
            env["PREFECT_API_URL"] = self.prefect_url
        return env

    def cli(self, label: str) -> list[str]:
        """The apim-upgrade command line (under pyinstrument with --profile; its report named ``label``)."""
        if self.profile_dir is None:
            return [sys.executable, "-m", "commands.cli"]
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        report = self.profile_dir / f"{label}.txt"
        return [sys.executable, "-m", "pyinstrument", "--show-all", "-o", str(report), "-m", "commands.cli"]

    def note(self, benchmark: str, line: str) -> None:
        self.extras.setdefault(benchmark, []).append(line)
        print(f"  [{benchmark}] {line}", flush=True)

    def estate(self, scale: int) -> Estate:
        """The sandbox at ``scale`` (built on first use; with the stand-in distribution if any benchmark needs it)."""
        if scale not in self.estates:
            from sandbox.create import create_sandbox

            start = time.perf_counter()
            plan_path, summary = create_sandbox(
                self.work / f"estate-{scale}",
                self.server,
                scale=scale,
                dbscripts=self.dbscripts,
                with_distribution=self.needs_distribution,
            )
            plan = load_plan(plan_path)
            sources = [p.source for p in plan.databases.roles().values()]
            rows = sum(take_snapshot(self.server, s).total_rows for s in sources)
            with db.session(self.server, "postgres", read_only=True) as conn:
                size = sum(int(r[1]) for r in db.fetch_all(conn, queries.DATABASE_INFO, (sources,)))
            self.sizes[scale] = (rows, size)
            self.estates[scale] = Estate(scale, plan_path, rows, size, summary.access_tokens, self.needs_distribution)
            print(
                f"  sandbox scale {scale}: {rows} rows, {size / 2**20:.0f} MB in the two sources "
                f"(built in {time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        return self.estates[scale]

    def derived_plan(self, scale: int, name: str, extra: dict[str, Any] | None = None) -> Path:
        """A plan of the estate's databases only (plus ``extra`` sections), in its own work directory."""
        source = tomllib.loads(self.estate(scale).plan_path.read_text())
        keep = ("name", "strategy", "postgres", "databases", "copy")
        doc: dict[str, Any] = {k: source[k] for k in keep if k in source}
        directory = self.work / f"{name}-{scale}"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        doc["work_dir"] = str(directory / "work")
        doc.update(extra or {})
        path = directory / "plan.toml"
        path.write_text(tomli_w.dumps(doc))
        return path


def _evict_page_cache(work: Path) -> None:
    """Push the page cache out by reading a throwaway file as large as the memory available."""
    available = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemAvailable:")
    )
    filler = work / "evict.bin"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb") as out:
        for _ in range(available >> 20):
            out.write(chunk)
    with filler.open("rb") as f:
        while f.read(1 << 24):
            pass
    filler.unlink()


@contextmanager
def context(work: Path | None = None, dbscripts: Path | None = None, *, throwaway: bool = False) -> Iterator[Context]:
    """PostgreSQL, a running Prefect server and a work directory; everything removed afterwards.

    ``throwaway``: a cluster of its own (initdb from the local binaries, default shared_buffers,
    fsync off), which can be restarted for cold-cache figures and is removed at the end.
    """
    from sandbox.create import destroy_sandbox
    from sandbox.pgserver import start_throwaway

    handle: ServerHandle = start_throwaway() if throwaway else find_server()
    root = work or Path(tempfile.mkdtemp(prefix="apim-bench-"))
    home = root / "prefect-home"
    port = free_port()
    prefect = start_prefect_server(home, port)
    ctx = Context(handle.server, root, f"http://127.0.0.1:{port}/api", home, dbscripts, handle=handle)
    try:
        yield ctx
    finally:
        try:
            for estate in ctx.estates.values():
                destroy_sandbox(estate.plan_path)
        finally:  # a throwaway cluster goes even when a sandbox could not be destroyed
            stop_prefect_server(prefect)
            handle.stop()
            shutil.rmtree(root, ignore_errors=True)


# --- measuring commands -------------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    peak_mb: dict[str, float]  # "flow", "stand-in", "embedded API", "other": largest VmHWM of each kind


def run_measured(args: list[str], env: dict[str, str], *, watch_dir: Path | None = None) -> Measured:
    """Run ``args`` to completion (failing loudly), with wall time and per-kind peak RSS."""
    before = set(_pids())  # processes that were already there are not ours
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks: dict[int, tuple[str, float]] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            _sample(proc.pid, peaks, watch_dir, before)
            done.wait(0.1)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        _, stderr = proc.communicate()
    except BaseException:  # interrupted: the measured command goes too (it may hold the estate's lock)
        proc.terminate()
        proc.wait(timeout=60)
        raise
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:6])} failed ({proc.returncode}):\n{stderr.decode()[-3000:]}")
    out: dict[str, float] = {}
    for kind, mb in peaks.values():
        out[kind] = max(out.get(kind, 0.0), mb)
    return Measured(seconds, out)


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _sample(root: int, peaks: dict[int, tuple[str, float]], watch_dir: Path | None, before: set[int]) -> None:
    parents: dict[int, int] = {}
    for pid in _pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree = {root}
    grew = True
    while grew:
        new = {p for p, pp in parents.items() if pp in tree and p not in tree}
        tree |= new
        grew = bool(new)
    for pid in set(parents) - before:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if pid not in tree:
                # Daemonised stand-in servers leave the tree: keep those started in this sandbox.
                if watch_dir is None or "sandbox.distribution.server" not in cmdline:
                    continue
                if not os.readlink(f"/proc/{pid}/cwd").startswith(str(watch_dir)):
                    continue
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        hwm = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
        if hwm is None:
            continue
        mb = int(hwm.split()[1]) / 1024
        peaks[pid] = (_kind(pid, root, cmdline), max(mb, peaks.get(pid, ("", 0.0))[1]))


def _kind(pid: int, root: int, cmdline: str) -> str:
    if pid == root:
        return "flow"
    if "sandbox.distribution.server" in cmdline:
        return "stand-in"
    if "uvicorn" in cmdline or "prefect.server" in cmdline:
        return "embedded API"
    return "other"


def median_of(reps: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(reps))


def drop_targets(ctx: Context, plan_path: Path) -> None:
    """Drop a derived plan's copies and its work directory (the next repetition starts clean)."""
    plan = load_plan(plan_path)
    with db.session(ctx.server, "postgres", autocommit=True) as conn:
        for pair in plan.databases.roles().values():
            db.execute(conn, queries.drop_database(pair.target))
    shutil.rmtree(plan.work_dir, ignore_errors=True)


# --- reading a run's audit trail ----------------------------------------------------------


@dataclass
class StepTimes:
    """Seconds per (phase, step) of one run's audit trail, and what its gates counted."""

    seconds: dict[tuple[str, str], float]
    counted_rows: dict[tuple[str, str], int]  # rows the step's snapshots counted (incremental gates)
    counted_tables: dict[tuple[str, str], int]

    def total(self, steps: set[str] | None = None, phases: set[str] | None = None) -> float:
        return sum(
            v
            for (phase, step), v in self.seconds.items()
            if (steps is None or step in steps) and (phases is None or phase in phases)
        )

    def rows(self, steps: set[str], phases: set[str] | None = None) -> int:
        return sum(v for (p, s), v in self.counted_rows.items() if s in steps and (phases is None or p in phases))

    def tables(self, steps: set[str], phases: set[str] | None = None) -> int:
        return sum(v for (p, s), v in self.counted_tables.items() if s in steps and (phases is None or p in phases))


def step_times(audit_path: Path, since: float | None = None) -> StepTimes:
    """The finished steps of ``audit_path`` (only those that started after ``since``, a Unix time)."""
    from apim_upgrade.proof import audit

    out = StepTimes({}, {}, {})
    for r in audit.read_records(audit_path):
        if r.ended_at is None or (since is not None and r.started_at.timestamp() < since):
            continue
        key = (r.phase, r.step)
        out.seconds[key] = out.seconds.get(key, 0.0) + (r.ended_at - r.started_at).total_seconds()
        for record in _counting_records(r.details):
            out.counted_rows[key] = out.counted_rows.get(key, 0) + int(record.get("counted_rows") or 0)
            out.counted_tables[key] = out.counted_tables.get(key, 0) + len(record.get("counted_tables") or [])
    return out


def _counting_records(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if "counted_rows" in value and "counted_tables" in value:
            yield value
            return
        for v in value.values():
            yield from _counting_records(v)
    elif isinstance(value, list):
        for v in value:
            yield from _counting_records(v)


# --- production's traffic during a measured side ------------------------------------------


class Writer(threading.Thread):
    """A client of a live source: its session open all along, one autocommit insert every ``interval`` s.

    What a 4.0.0 control plane does to WSO2AM_DB while it issues tokens (an insert into
    ``am_subscriber`` stands for any acknowledged write); ``acknowledged`` counts them.
    """

    INSERT = (
        "INSERT INTO am_subscriber (user_id, tenant_id, email_address, date_subscribed) "
        "VALUES (%s, -1234, 'bench-writer@example.com', now())"
    )

    def __init__(self, server: db.PgServer, dbname: str, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.server, self.dbname, self.interval = server, dbname, interval
        self.acknowledged = 0
        self.failed: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        conn = db.connect(self.server, self.dbname, autocommit=True, application_name="bench production writer")
        try:
            while not self._halt.is_set():
                try:
                    conn.execute(self.INSERT, (f"bench-writer-{time.monotonic_ns()}",))
                    self.acknowledged += 1
                except Exception as exc:  # noqa: BLE001 - a refused write is a figure, not the end
                    self.failed = str(exc).splitlines()[0]
                    return
                self._halt.wait(self.interval)
        finally:
            conn.close()

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.acknowledged


@contextmanager
def writing(server: db.PgServer, dbname: str) -> Iterator[Writer]:
    writer = Writer(server, dbname)
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()
