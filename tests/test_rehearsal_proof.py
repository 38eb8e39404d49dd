"""Whole rehearsals as an operator starts them: crashes, concurrency, secrets, untouched sources.

One scenario, three sandbox estates built by the same generator at the same scale (so their
data are identical), each rehearsed end to end by real ``apim-upgrade rehearse`` processes
(stand-in JVM runs and the cutover on stand-in nodes included), all at the same time:

* ``reference``: an uninterrupted rehearsal, with distinctive secret values, and a second
  rehearsal of the same estate started together with it;
* ``early`` and ``late``: crash chains (tests/crash_chain.py) that SIGKILL the rehearsal at
  21 verified points over every phase and rerun it each time.

The tests then check: the second rehearsal of an estate was refused at once, naming the
holder, while the three estates were rehearsed side by side; every crashed estate ends in
the reference's end state (catalogue, row counts, key rows, bookkeeping) with no stand-in
server left; no byte produced holds a secret; and no source changed, crashed runs included.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db, queries
from apim_upgrade.proof import audit
from apim_upgrade.rehearsal import derive_rehearsal_plan
from commands import cli
from sandbox.create import create_sandbox, destroy_sandbox, sandbox_secrets
from sandbox.demo import accept_invalid_apis
from sandbox.nodes import standin_processes, stop_everything
from tests.conftest import unique
from tests.crash_chain import (
    PHASES,
    WAIT,
    Chain,
    crash_early_phases,
    crash_late_phases,
    rehearse,
)
from tests.failpoints import FILE_VARIABLE, POINT_VARIABLE
from tests.proof import differences, end_state, source_fingerprint

# The module fixture rehearses three estates through 21 crash points: minutes, more on a shared 2-core machine.
pytestmark = pytest.mark.timeout(1500)

# 'wso2carbon' (the 4.0.0 nodes' keystore password) is WSO2's public default and part of file
# names such as wso2carbon.jks, so it cannot serve as a distinctive value; every other secret does.
DISTINCT = ("APIM_SANDBOX_ADMIN_PASSWORD", "APIM_SANDBOX_DB_PASSWORD", "APIM_SANDBOX_SUPER_ADMIN_PASSWORD")
PG_PASSWORD_ENV = "APIM_UPGRADE_PG_PASSWORD"
ESTATES = ("reference", "early", "late")


@dataclass
class Run:
    """One uninterrupted ``rehearse`` process: its console goes to files beside the chains' runs."""

    label: str
    proc: subprocess.Popen[bytes]
    out: Path
    started: float
    ended: float = 0.0
    watcher: threading.Thread | None = None

    def watch(self) -> None:
        """Note the moment the process ends (the chains keep the test busy meanwhile)."""

        def wait() -> None:
            self.proc.wait()
            self.ended = time.monotonic()

        self.watcher = threading.Thread(target=wait, daemon=True)
        self.watcher.start()

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def console(self) -> str:
        return self.out.read_text(errors="replace") + self.out.with_suffix(".err").read_text(errors="replace")


@dataclass
class Proof:
    plans: dict[str, Path]
    chains: dict[str, Chain]
    chain_windows: dict[str, tuple[float, float]]
    reference: Run
    duplicate: Run
    secrets: dict[str, str]
    sources_before: dict[str, dict[str, Any]]
    sources_after: dict[str, dict[str, Any]]
    runs_dir: Path
    prefect_db: Path
    api_dump: str
    copies_dump: str


def _distinctive_secrets(plan_path: Path) -> dict[str, str]:
    """Replace the sandbox's secrets with distinctive values; give the maintenance login a password too."""
    root = plan_path.parent
    values = sandbox_secrets(root)
    text = (root / "sandbox.env").read_text()
    for name in DISTINCT:
        new = f"{name.split('_')[-2].lower()}-S3cr3t-{secrets.token_hex(8)}"
        text = text.replace(f"export {name}='{values[name]}'", f"export {name}='{new}'")
    (root / "sandbox.env").write_text(text)
    values = sandbox_secrets(root)
    values[PG_PASSWORD_ENV] = f"pg-S3cr3t-{secrets.token_hex(8)}"  # trust auth ignores it; nothing may print it
    doc = tomllib.loads(plan_path.read_text())
    doc["postgres"]["password_env"] = PG_PASSWORD_ENV
    plan_path.write_text(tomli_w.dumps(doc))
    return values


def _start(label: str, plan_path: Path, env: dict[str, str], runs_dir: Path) -> Run:
    out = runs_dir / f"{label}.out"
    run = Run(label, rehearse(plan_path, env, out, out.with_suffix(".err")), out, time.monotonic())
    run.watch()
    return run


def _finish(run: Run) -> None:
    assert run.watcher is not None
    run.watcher.join(WAIT * 3)
    if run.proc.poll() is None:
        run.proc.kill()
        pytest.fail(f"rehearsal {run.label} did not finish:\n{run.console()[-3000:]}")


def _timed(crash: Callable[[Chain, db.PgServer], None], chain: Chain, server: db.PgServer) -> tuple[float, float]:
    started = time.monotonic()
    crash(chain, server)
    return started, time.monotonic()


def _dump_prefect_api() -> str:
    """Everything the runs sent to the Prefect API: logs, artifacts, flow runs with their parameters."""
    from prefect.client.orchestration import get_client

    parts: list[str] = []
    with get_client(sync_client=True) as client:
        while logs := client.read_logs(limit=200, offset=len(parts)):
            parts += [f"{log.name} {log.message}" for log in logs]
        log_count = len(parts)
        artifacts = client.read_artifacts()
        runs = client.read_flow_runs()
        parts += [json.dumps(a.model_dump(mode="json"), default=str) for a in artifacts]
        parts += [json.dumps(r.model_dump(mode="json"), default=str) for r in runs]
    assert artifacts and runs and log_count > 100, "the runs reported to this Prefect API"
    return "\n".join(parts)


def _dump_copies(server: db.PgServer, plan_path: Path) -> str:
    """apim-upgrade's own tables (audit trail, history, checkpoints) and the markers of the copies."""
    rehearsal = load_plan(derive_rehearsal_plan(load_plan(plan_path)))
    parts: list[str] = []
    for pair in rehearsal.databases.roles().values():
        with db.session(server, pair.target, read_only=True) as conn:
            for (table,) in db.fetch_all(conn, queries.TABLES, (queries.HISTORY_SCHEMA,)):
                parts += [row[0] for row in db.fetch_all(conn, queries.rows_as_text(queries.HISTORY_SCHEMA, table))]
            parts += [str(info) for info in db.fetch_all(conn, queries.DATABASE_INFO, ([pair.target],))]
    assert any("apply_sql_script" in p for p in parts), "the copies hold the product's records"
    return "\n".join(parts)


@pytest.fixture(scope="module")
def proof(pg: db.PgServer, prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proof]:
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_DATABASE_CONNECTION_URL

    root = tmp_path_factory.mktemp("rehearsal-proof")
    runs_dir = root / "runs"
    runs_dir.mkdir()
    patch = pytest.MonkeyPatch()
    plans: dict[str, Path] = {}
    chains: dict[str, Chain] = {}
    started: list[Run] = []
    try:
        for name in ESTATES:
            plans[name], _ = create_sandbox(root / name, pg, prefix=unique("apim_p"), with_distribution=True)
        reference_secrets = _distinctive_secrets(plans["reference"])
        patch.setenv(PG_PASSWORD_ENV, reference_secrets[PG_PASSWORD_ENV])  # this process's own connections
        # The reference and the late chain accept the broken APIs up front (as after a review); the
        # early chain meets the pre-migration gate and accepts them then.
        accept_invalid_apis(plans["reference"])
        accept_invalid_apis(plans["late"])
        sources_before = {name: source_fingerprint(pg, load_plan(plans[name])) for name in ESTATES}

        base = {k: v for k, v in os.environ.items() if k not in (POINT_VARIABLE, FILE_VARIABLE)}
        base.update(
            APIM_STANDIN_SPEED="20",
            PREFECT_API_URL=str(PREFECT_API_URL.value()),
            PREFECT_LOGGING_LEVEL="INFO",  # an operator's default: every log line goes to the API
        )
        for name in ("early", "late"):
            chains[name] = Chain(plans[name], {**base, **sandbox_secrets(plans[name].parent)}, pg, runs_dir / name)
            chains[name].out_dir.mkdir()
        reference_env = {**base, **reference_secrets}
        started.append(_start("reference", plans["reference"], reference_env, runs_dir))
        started.append(_start("duplicate", plans["reference"], reference_env, runs_dir))  # started together
        with ThreadPoolExecutor(2) as pool:
            early = pool.submit(_timed, crash_early_phases, chains["early"], pg)
            late = pool.submit(_timed, crash_late_phases, chains["late"], pg)
            try:
                windows = {"early": early.result(), "late": late.result()}
            finally:
                for chain in chains.values():
                    chain.close()
        for run in started:
            _finish(run)
        yield Proof(
            plans=plans,
            chains=chains,
            chain_windows=windows,
            reference=started[0],
            duplicate=started[1],
            secrets=reference_secrets,
            sources_before=sources_before,
            sources_after={name: source_fingerprint(pg, load_plan(plans[name])) for name in ESTATES},
            runs_dir=runs_dir,
            prefect_db=Path(str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()).split("///", 1)[1]),
            api_dump=_dump_prefect_api(),
            copies_dump=_dump_copies(pg, plans["reference"]),
        )
    finally:
        try:
            for run in started:
                if run.proc.poll() is None:
                    run.proc.kill()
            for plan_path in plans.values():
                stop_everything(plan_path.parent)
        finally:
            for plan_path in plans.values():
                destroy_sandbox(plan_path)  # sources, copies and rehearsal copies
            patch.undo()


def _winner_and_loser(proof: Proof) -> tuple[Run, Run]:
    first, second = proof.reference, proof.duplicate
    return (first, second) if first.proc.returncode == 0 else (second, first)


def test_second_rehearsal_of_an_estate_is_refused_at_once(proof: Proof) -> None:
    winner, loser = _winner_and_loser(proof)
    assert winner.proc.returncode == 0, winner.console()[-3000:]
    assert loser.proc.returncode == 9, loser.console()[-3000:]
    failed = [line for line in loser.console().splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1, loser.console()[-3000:]
    name = load_plan(proof.plans["reference"]).name
    # Who holds it: the winner's session, by its application name, and what to do.
    assert re.search(rf"another run is working on estate '{name}' right now \(pid \d+ 'apim-upgrade {name} ", failed[0])
    assert "wait for it to finish" in failed[0]
    # At once: refused while the winner was still working, long before it finished.
    assert loser.ended < winner.ended and loser.seconds < winner.seconds / 2
    assert "cutover: " in winner.console() and "report: " in winner.console()


def test_rehearsals_of_different_estates_run_side_by_side(proof: Proof) -> None:
    winner, _ = _winner_and_loser(proof)
    assert winner.proc.returncode == 0
    for name, (start, end) in proof.chain_windows.items():
        assert start < winner.ended and winner.started < end, f"the {name} chain did not overlap the reference"
        # Each chain ended with a successful run to the end (crash_chain asserts its exit code).
        assert proof.chains[name].timeline[-1][0] == "to the end"
    for plan_path in proof.plans.values():
        rehearsal = load_plan(derive_rehearsal_plan(load_plan(plan_path)))
        assert audit.verify_chain(rehearsal.audit_path) == []
        steps = {r.step for r in audit.read_records(rehearsal.audit_path) if r.outcome == "succeeded"}
        assert {"run_api_manager", "apply_sql_script", "check_conformance", "restart_gateways"} <= steps


def test_no_secret_in_any_byte_produced(proof: Proof) -> None:
    values = {k: v for k, v in proof.secrets.items() if k in (*DISTINCT, PG_PASSWORD_ENV)}
    values["keystore"] = proof.secrets["APIM_SANDBOX_KEYSTORE_PASSWORD"]  # random per kit
    assert len(values) == 5 and all(len(v) >= 16 for v in values.values())
    needles = {name: value.encode() for name, value in values.items()}

    def hits(blob: bytes) -> list[str]:
        return [name for name, needle in needles.items() if needle in blob]

    sandbox_dir = proof.plans["reference"].parent
    # The scanner finds what is there: the secrets file holds four of them.
    assert len(hits((sandbox_dir / "sandbox.env").read_bytes())) == 4

    leaks: list[str] = []
    scanned = 0
    for path in sorted([*sandbox_dir.rglob("*"), *proof.runs_dir.glob("reference.*"), *proof.runs_dir.glob("dup*")]):
        if path.is_file() and not path.is_symlink() and path.name != "sandbox.env":
            scanned += 1
            leaks += [f"{path}: {n}" for n in hits(path.read_bytes())]
    names = {p.name for p in sandbox_dir.rglob("*")}
    for produced in ("audit.jsonl", "report.html", "index.html", "deployment.toml", "wso2carbon.log"):
        assert produced in names, f"the run produced no {produced}"
    leaks += [f"Prefect API: {n}" for n in hits(proof.api_dump.encode())]
    for path in proof.prefect_db.parent.iterdir():  # the API's database (and its WAL), raw bytes
        leaks += [f"Prefect database {path.name}: {n}" for n in hits(path.read_bytes())]
    leaks += [f"apim_upgrade tables of the copies: {n}" for n in hits(proof.copies_dump.encode())]
    assert scanned > 200
    assert leaks == []


def test_sources_untouched_even_by_crashed_runs(proof: Proof) -> None:
    for name in ESTATES:
        before, after = proof.sources_before[name], proof.sources_after[name]
        tables = {key.rsplit(".", 1)[1] for key in before if ".rows." in key}
        assert {"am_api", "am_application", "am_subscription", "idn_oauth2_access_token", "reg_resource"} <= tables
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        assert changed == [], name


def test_crash_anywhere_then_same_end_state_and_no_orphans(proof: Proof, pg: db.PgServer) -> None:
    """Last in this module: it changes a row of one copy to show the comparison can fail."""
    chains = proof.chains
    hits = [hit for chain in chains.values() for hit in chain.hits]
    print(f"\n{len(hits)} kills in {sum(c.runs for c in chains.values())} runs:")
    for name, chain in chains.items():
        for hit in chain.hits:
            print(f"  {name:<5} run {hit['run']:2} {hit['at_s']:6.1f}s {hit['point']:<52} {hit['evidence']}")
        print(f"  {name} run durations (s): " + ", ".join(f"{label} {sec}" for label, sec in chain.timeline))
    (proof.runs_dir / "points.json").write_text(json.dumps(hits, indent=1))
    points = {hit["point"] for hit in hits}
    assert len(points) >= 20 and len(points) == len(hits)
    assert {hit["phase"] for hit in hits} == set(PHASES)
    assert sum(hit["point"].startswith("mid-") for hit in hits) >= 5

    # Same end state as the uninterrupted rehearsal: catalogue, counts, key rows, bookkeeping.
    expected = end_state(pg, load_plan(derive_rehearsal_plan(load_plan(proof.plans["reference"]))))
    checksums = {key: value for key, value in expected.items() if ".checksum." in key}
    assert len(checksums) == 7 and all(value != "absent" and value["rows"] > 0 for value in checksums.values())
    recorded = {"identity-migration", "api-pre-migration", "api-migration", "cleanup", "schema-upgrade", "cutover"}
    assert {phase for phase, _ in expected["apim.bookkeeping.completed_steps"]} == recorded
    for chain in chains.values():
        assert differences(expected, end_state(pg, chain.plan)) == [], chain.plan_path
        # The audit trail still verifies, file and database copy, after all those crashes.
        assert audit.verify_chain(chain.plan.audit_path) == []
        assert cli.main(["audit", "verify", "--plan", str(chain.plan.source_path)]) == 0
        # No stand-in migration server and no 4.2.0 home are left behind.
        assert standin_processes(chain.plan.work_dir) == []
        assert not list((chain.plan.work_dir / "migration-env").glob("*/bin/api-manager.sh"))

    # The proof can fail: one changed value in one row of one copy shows up, and nothing else does.
    late = chains["late"].plan
    with db.session(pg, late.databases.apim.target) as conn:
        db.execute(
            conn,
            "UPDATE am_subscription SET sub_status = 'changed-by-the-crash-test' "
            "WHERE subscription_id = (SELECT min(subscription_id) FROM am_subscription)",
        )
    changed = differences(expected, end_state(pg, late))
    assert [line.split(":")[0] for line in changed] == ["apim.checksum.am_subscription"], changed
