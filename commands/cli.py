"""The ``apim-upgrade`` command line: one function per verb, errors printed once."""

# Every verb imports what it needs inside its function: `--help` and a mistyped command
# must not pay for Prefect, GX, pandas, SQLAlchemy or psycopg (tests/test_cli_startup.py).

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from apim_upgrade.errors import (
    ApimUpgradeError,
    AuditError,
    DiskFull,
    PreflightError,
    cli_reports_failures,
    disk_full_in,
    hide_known_tracebacks,
)
from apim_upgrade.phases import NAMES as PHASE_NAMES

if TYPE_CHECKING:
    from apim_upgrade.plan import Plan

# Quiet, local defaults; an operator's own settings win.
for _var, _value in (
    ("DO_NOT_TRACK", "1"),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("GX_ANALYTICS_ENABLED", "False"),
):
    os.environ.setdefault(_var, _value)


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[int] = ()) -> None:
    """Aligned columns; plain text, unwrapped, when stdout is no terminal (a log file, a pipe, grep)."""
    from rich import box  # here, not at the top: `--help` stays light
    from rich.console import Console
    from rich.table import Table

    tty = sys.stdout.isatty()
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold" if tty else "")
    for i, header in enumerate(headers):
        # A narrow terminal wraps a cell rather than cutting it short with an ellipsis.
        table.add_column(header, justify="right" if i in numeric else "left", no_wrap=not tty, overflow="fold")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    # Not a terminal: no colour codes, and wide enough that no cell is folded.
    Console(color_system="auto" if tty else None, width=None if tty else 10_000, highlight=False).print(table)


# --- plan -----------------------------------------------------------------------


def cmd_plan_check(args: argparse.Namespace) -> int:
    from apim_upgrade import phases
    from apim_upgrade.plan import load_plan
    from apim_upgrade.preflight import check_phase_inputs, customisation_findings, run_preflight

    plan = load_plan(args.plan)
    print(f"plan '{plan.name}' ({plan.source_path}) is valid; strategy {plan.strategy.value}")
    report = run_preflight(plan, terminate_connections=args.terminate_connections or None)
    for finding in report.findings:
        print(finding.line())
    if not report.ok:
        raise PreflightError([f"{f.check}: {f.message}" for f in report.errors])
    # The sources exist and are readable: list what they have that WSO2's 4.0.0 DDL does not.
    customised = customisation_findings(plan)
    for finding in customised:
        print(finding.line())
    errors = [f for f in customised if f.severity == "error"]
    if errors:
        raise PreflightError([f"{f.check}: {f.message}" for f in errors])
    check_phase_inputs(plan, phases.NAMES)
    print("preflight passed")
    return 0


# --- run ------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from apim_upgrade import phases
    from apim_upgrade.plan import load_plan
    from apim_upgrade.preflight import check_phase_inputs
    from flows.phases import run_phase_in_window

    plan = load_plan(args.plan)  # fail fast, before Prefect starts
    if args.phase and (args.from_phase or args.until_phase):
        raise ApimUpgradeError("give either --phase or --from/--until, not both")
    # A cutover: what needs no frozen data first, then the window (approval, 4.0.0 stopped), then the rest.
    selected = [args.phase] if args.phase else phases.cutover_order(phases.select(args.from_phase, args.until_phase))
    for name in selected:
        phases.check_runnable(plan, phases.get(name).name)
    check_phase_inputs(plan, selected)  # packs, keystores, scripts: before anything is written
    if args.dry_run:
        if selected != [phases.SCHEMA_UPGRADE.name]:
            raise ApimUpgradeError("--dry-run is supported for --phase schema-upgrade; add --phase schema-upgrade")
        from flows.schema_upgrade import dry_run

        print("\n".join(dry_run(str(plan.source_path))))
        return 0
    from apim_upgrade.estate_lock import estate_lock

    with estate_lock(plan, "run"), _prefect_api():  # a second writer on this estate is refused at once
        for name in selected:
            print(f"== phase {name}")
            try:
                result = run_phase_in_window(
                    name, plan, terminate_connections=args.terminate_connections, rebaseline=args.rebaseline
                )
            except ApimUpgradeError:
                _report_after_failure(plan.work_dir, plan.report.traffic_ledger)
                raise
            print(f"== phase {name} finished: {result}")
            if name == phases.WINDOW.name and str(result).startswith("rejected"):
                break  # nothing stopped, nothing copied
    _print_outputs(plan.work_dir, plan.report.traffic_ledger)
    return 0


def _fail_fast(plan: Plan) -> None:
    """Before Prefect starts: the password variable is set and the server takes the login.

    The same failure then has the same exit code and line whichever command meets it.
    A password in a Prefect Secret block needs the API: it is read once the run starts.
    """
    from apim_upgrade.postgres import db

    if plan.postgres.password_secret_block:
        return
    db.connect(plan.server(), plan.postgres.maintenance_db, autocommit=True).close()


def _prefect_api() -> AbstractContextManager[str | None]:
    """Flows run against the configured Prefect API, else an embedded one started now (after the
    fail-fast checks): apim_upgrade/runtime/embedded_api.py."""
    from apim_upgrade.runtime.embedded_api import embedded_api

    return embedded_api()


def cmd_rehearse(args: argparse.Namespace) -> int:
    from apim_upgrade import phases
    from apim_upgrade.plan import load_plan
    from apim_upgrade.preflight import check_phase_inputs
    from flows.upgrade_apim import upgrade_apim

    plan = load_plan(args.plan)  # fail fast, before Prefect starts
    check_phase_inputs(plan, phases.select(args.from_phase, args.until_phase))
    _fail_fast(plan)
    with _prefect_api():
        results = upgrade_apim(
            plan=str(Path(args.plan).resolve()),
            mode="rehearsal",
            from_phase=args.from_phase,
            until_phase=args.until_phase,
            resume=not args.fresh,
            keep_copies=args.keep_copies,
        )
    for name, result in results.items():
        print(f"{name}: {result}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from apim_upgrade.plan import load_plan
    from apim_upgrade.rehearsal import nothing_to_roll_back
    from apim_upgrade.wso2.node_identity import identify
    from flows.cutover import ROLLBACK_NOT_CONFIRMED, rollback

    plan = load_plan(args.plan)
    if plan.cutover is None:
        raise ApimUpgradeError(f"{args.plan} has no [cutover] section: nothing to roll back")
    try:  # nothing to roll back, or a rehearsal refused: nothing to confirm (the flow decides it again, recorded)
        to_confirm = nothing_to_roll_back(plan) is None
    except ApimUpgradeError:
        to_confirm = False
    if not args.yes and to_confirm:
        if not sys.stdin.isatty():
            raise ApimUpgradeError(ROLLBACK_NOT_CONFIRMED)
        gateways = [n for g in plan.cutover.gateway_groups for n in g.nodes]
        print(f"Rollback of {plan.name}: stops what serves the 4.4.0 control plane (if this estate started it),")
        print("starts 4.0.0 on the source databases, then each gateway's 4.0.0 node. Now:")
        for node in [*plan.cutover.control_plane_440, *plan.cutover.control_plane_400, *gateways]:
            print("  " + identify(node).line())
        if input("Roll back? [y/N] ").strip().lower() not in ("y", "yes"):
            print("rollback not confirmed: nothing was stopped")
            return 1
    _fail_fast(plan)
    with _prefect_api():
        print(rollback(plan_path=str(plan.source_path), confirmed=args.yes or to_confirm))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from apim_upgrade.proof.report import report_command

    path = Path(args.path)
    plan_file = path / "plan.toml" if path.is_dir() and not (path / "audit.jsonl").exists() else path
    if plan_file.is_file() and plan_file.suffix == ".toml":
        from apim_upgrade.estate_lock import estate_lock
        from apim_upgrade.plan import load_plan

        with estate_lock(load_plan(plan_file), "report"):  # not while a run is writing the trail it reads
            print(f"report: {report_command(plan_file)}")
        return 0
    print(f"report: {report_command(path)}")  # a work directory alone: the trail's own file lock orders it
    return 0


def _report_after_failure(work_dir: Path, traffic_ledger: Path | None = None) -> None:
    """A stopped run still gets its report (the failure first); never hides the failure itself."""
    from apim_upgrade.proof.report import build_report

    if (work_dir / "audit.jsonl").exists():
        try:
            print(f"report:      {build_report(work_dir, traffic_ledger=traffic_ledger)}")
        except (ApimUpgradeError, OSError) as exc:
            print(f"(no report: {exc})")


def _print_outputs(work_dir: Path, traffic_ledger: Path | None = None) -> None:
    docs = work_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    print(f"audit trail: {work_dir / 'audit.jsonl'}")
    if docs.exists():
        print(f"Data Docs:   {docs}")
    if (work_dir / "audit.jsonl").exists():
        from apim_upgrade.proof.report import build_report

        print(f"report:      {build_report(work_dir, traffic_ledger=traffic_ledger)}")


# --- audit and history -------------------------------------------------------------


def _audit_file(path: Path) -> Path:
    return path / "audit.jsonl" if path.is_dir() else path


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from apim_upgrade.plan import load_plan
    from apim_upgrade.proof import audit

    plan = load_plan(args.plan) if args.plan else None
    if args.path is None and plan is None:
        raise AuditError("give the work directory (or audit.jsonl) to verify, or --plan PLAN.toml")
    path = _audit_file(Path(args.path)) if args.path else plan.audit_path  # type: ignore[union-attr]
    problems = audit.verify_chain(path)
    records = audit.read_records(path) if not problems else []
    if plan is not None and not problems:
        problems += audit.compare_with_database(plan.server(), plan.databases.apim.target, records)
    if problems:
        raise AuditError(f"{path}: the audit trail does not verify:\n" + "\n".join(f"  - {p}" for p in problems))
    print(
        f"{path}: {len(records)} record(s), hash chain intact"
        + (" and matching the database history" if plan is not None else "")
    )
    return 0


def cmd_audit_repair(args: argparse.Namespace) -> int:
    from apim_upgrade.estate_lock import estate_lock
    from apim_upgrade.plan import load_plan
    from apim_upgrade.proof import audit

    plan = load_plan(args.plan)
    with estate_lock(plan, "audit repair"):  # no run may append while the file is rebuilt
        from_db, from_file, damaged = audit.repair(plan.audit_path, plan.server(), plan.databases.apim.target)
    print(
        f"{plan.audit_path}: rebuilt from {from_db} record(s) of '{plan.databases.apim.target}'"
        + (f" and {from_file} intact record(s) of the file beyond them" if from_file else "")
        + "; hash chain intact"
        + (f"; the damaged file is kept as {damaged}" if damaged else "")
    )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from apim_upgrade.plan import load_plan
    from apim_upgrade.proof import audit

    plan = load_plan(args.plan)
    records = audit.read_records(plan.audit_path)
    if not records:
        print(f"no history yet in {plan.audit_path}")
        return 0
    rows = []
    for r in records:
        took = f"{(r.ended_at - r.started_at).total_seconds():.1f}s" if r.ended_at else "-"
        target = r.details.get("target") or r.details.get("source") or ""
        rows.append(
            [
                r.seq,
                r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                r.phase,
                r.step,
                target,
                r.outcome,
                took,
                r.actor,
                (r.flow_run_id or "-")[:8],
                _history_note(r.details),
            ]
        )
    headers = ["seq", "started (UTC)", "phase", "step", "database", "outcome", "took", "actor", "run", "note"]
    _print_table(headers, rows, numeric=(0, 6))
    problems = audit.verify_chain(plan.audit_path)
    print("hash chain: " + ("intact" if not problems else f"BROKEN ({len(problems)} problem(s))"))
    rehearsals = sorted(plan.work_dir.glob("rehearsal_*/plan.toml"))
    for rehearsal in rehearsals:  # each rehearsal keeps its own trail beside its derived plan
        print(f"rehearsal {rehearsal.parent.name}: apim-upgrade history {rehearsal}")
    return 0


def _history_note(details: dict[str, object]) -> str:
    """What a row decided or why it failed or was skipped, in one short line."""
    if "decision" in details:
        return f"{details['decision']} by {details.get('by') or '?'}: {details.get('reason') or '-'}"
    for key in ("error", "reason", "state"):
        if details.get(key):
            text = " ".join(str(details[key]).split())
            return text if len(text) <= 100 else text[:99] + "…"
    return ""


# --- sandbox and demo ----------------------------------------------------------------


def cmd_sandbox_create(args: argparse.Namespace) -> int:
    from apim_upgrade.postgres import db
    from sandbox.create import create_sandbox
    from sandbox.pgserver import find_server

    server = db.PgServer.from_dsn(args.pg_dsn) if args.pg_dsn else find_server(allow_throwaway=False).server
    plan_path, summary = create_sandbox(
        Path(args.dir), server, scale=args.scale, dbscripts=Path(args.dbscripts) if args.dbscripts else None
    )
    print(
        f"sandbox estate ({summary.schema_source}, scale {args.scale}): "
        f"{summary.apis} APIs ({len(summary.invalid_openapi_apis)} with invalid OpenAPI), "
        f"{summary.applications} applications, {summary.access_tokens} access tokens"
    )
    print(f"plan written to {plan_path}")
    env_file = plan_path.parent / "sandbox.env"
    if env_file.exists():  # a sandbox with the stand-in distribution and nodes
        print("next:")
        print(f"  source {env_file}                       # its throwaway secrets, for the JVM phases")
        print(f"  uv run apim-upgrade sandbox start {plan_path}   # its 4.0.0 control plane and gateways")
        print(f"  uv run apim-upgrade rehearse {plan_path}")
    else:
        print(f"next: uv run apim-upgrade run {plan_path} --phase prepare-databases")
    return 0


def cmd_sandbox_start(args: argparse.Namespace) -> int:
    from apim_upgrade.plan import load_plan
    from sandbox.nodes import start_estate

    plan = load_plan(args.plan)
    if plan.cutover is None:
        raise ApimUpgradeError(f"{args.plan} has no [cutover] nodes to start")
    print("running: " + ", ".join(start_estate(plan.cutover)))
    if args.traffic:
        return cmd_sandbox_traffic_start(args)
    return 0


def cmd_sandbox_traffic_start(args: argparse.Namespace) -> int:
    from sandbox.traffic import DEFAULT_APP_EVERY, DEFAULT_RATE, start_traffic

    rate = DEFAULT_RATE if args.rate is None else args.rate
    app_every = DEFAULT_APP_EVERY if args.app_every is None else args.app_every
    pid, ledger = start_traffic(Path(args.plan), rate=rate, app_every=app_every)
    print(f"traffic: generator pid {pid}, {rate:g} round(s)/s, ledger {ledger}")
    print(f"  stop it with: uv run apim-upgrade sandbox traffic stop {args.plan}")
    return 0


def cmd_sandbox_traffic_stop(args: argparse.Namespace) -> int:
    from sandbox.traffic import stop_traffic

    pids = stop_traffic(Path(args.plan).resolve().parent)
    print(f"traffic: stopped generator pid {', '.join(map(str, pids))}" if pids else "traffic: no generator running")
    return 0


def cmd_sandbox_traffic_status(args: argparse.Namespace) -> int:
    from apim_upgrade.plan import load_plan
    from apim_upgrade.proof.ledger import read_ledger
    from sandbox.traffic import LEDGER_NAME, running

    plan_path = Path(args.plan).resolve()
    pid = running(plan_path.parent)
    ledger = load_plan(plan_path).report.traffic_ledger or plan_path.parent / LEDGER_NAME
    entries = read_ledger(ledger) if ledger.exists() else []
    writes = sum(e.acknowledged_write for e in entries)
    failed = [e for e in entries if not e.ok]
    print(f"traffic: {'running, pid ' + str(pid) if pid else 'not running'}; ledger {ledger}")
    print(f"  {len(entries)} call(s), {writes} acknowledged write(s), {len(failed)} failed")
    if failed:
        print(f"  last failure: {failed[-1].at.isoformat()} {failed[-1].call}: {failed[-1].error}")
    return 0


def cmd_sandbox_destroy(args: argparse.Namespace) -> int:
    from sandbox.create import destroy_sandbox

    dropped = destroy_sandbox(Path(args.plan))
    print("dropped (if present): " + ", ".join(dropped))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sandbox.demo import run_demo

    with _prefect_api():  # boots while the sandbox is built
        work_dir = run_demo(args.scale, Path(args.dir) if args.dir else None, args.keep)
    plan_path = work_dir.parent / "plan.toml"  # the rehearsal's derived plan
    from apim_upgrade.plan import load_plan

    ledger = load_plan(plan_path).report.traffic_ledger
    cmd_history(argparse.Namespace(plan=str(plan_path)))
    # With --keep the target database still holds its copy of the trail: compare with it too.
    cmd_audit_verify(
        argparse.Namespace(path=None if args.keep else str(work_dir), plan=str(plan_path) if args.keep else None)
    )
    _print_outputs(work_dir, ledger)
    return 0


# --- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="apim-upgrade", description=__doc__)
    p.add_argument("--traceback", action="store_true", help="show the full traceback on failure")
    sub = p.add_subparsers(dest="command", required=True)

    def add(
        name: str,
        func: Callable[[argparse.Namespace], int],
        parent: argparse._SubParsersAction,
        help_text: str,
    ) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(func=func)
        return sp

    plan = sub.add_parser("plan", help="work with plan files").add_subparsers(dest="plan_command", required=True)
    sp = add("check", cmd_plan_check, plan, "validate a plan and run preflight checks")
    sp.add_argument("plan")
    sp.add_argument(
        "--terminate-connections",
        action="store_true",
        help='treat other sessions on the sources as to be terminated, not as errors (copy.method = "template" only)',
    )

    sp = add("run", cmd_run, sub, "run the upgrade phases of a plan (all, --phase NAME, or --from/--until)")
    sp.add_argument("plan")
    sp.add_argument("--phase", help=f"one phase: {', '.join(PHASE_NAMES)}")
    sp.add_argument("--from", dest="from_phase", help="first phase to run")
    sp.add_argument("--until", dest="until_phase", help="last phase to run")
    sp.add_argument(
        "--terminate-connections",
        action="store_true",
        help="terminate other sessions on a source before a template copy (explicit opt-in; "
        'copy.method = "template" only: auto and snapshot copy a live source online)',
    )
    sp.add_argument(
        "--dry-run",
        action="store_true",
        help="schema-upgrade: print exactly what would run, statement by statement; change nothing",
    )
    sp.add_argument(
        "--rebaseline",
        action="store_true",
        help="schema-upgrade: accept changed script files as the applied ones (explicit opt-in)",
    )

    sp = add("rehearse", cmd_rehearse, sub, "rehearse the upgrade on dated copies (never touches real nodes)")
    sp.add_argument("plan")
    sp.add_argument("--from", dest="from_phase", help="first phase to run")
    sp.add_argument("--until", dest="until_phase", help="last phase to run")
    sp.add_argument("--fresh", action="store_true", help="drop today's rehearsal copies first instead of resuming")
    sp.add_argument("--keep-copies", action="store_true", help="keep the rehearsal copies at the end")

    aud = sub.add_parser("audit", help="audit trail").add_subparsers(dest="audit_command", required=True)
    sp = add("verify", cmd_audit_verify, aud, "verify the hash chain (and the database copy with --plan)")
    sp.add_argument("path", nargs="?", help="work directory or audit.jsonl")
    sp.add_argument("--plan", help="also compare with the history schema in the target database")
    sp = add("repair", cmd_audit_repair, aud, "rebuild audit.jsonl from its copy in the target database")
    sp.add_argument("plan")

    sp = add("rollback", cmd_rollback, sub, "side-by-side: stop 4.4.0 and start 4.0.0 again on the sources")
    sp.add_argument("plan")
    sp.add_argument("--yes", action="store_true", help="do not ask before stopping nodes (needed without a terminal)")

    sp = add("report", cmd_report, sub, "rebuild the HTML report of a run from its audit trail")
    sp.add_argument("path", help="work directory, audit.jsonl or plan.toml")

    sp = add("history", cmd_history, sub, "print the audit trail of a plan as a table")
    sp.add_argument("plan")

    sb = sub.add_parser("sandbox", help="sandbox estates").add_subparsers(dest="sandbox_command", required=True)
    sp = add("create", cmd_sandbox_create, sb, "build a 4.0.0 estate to rehearse on, and its plan")
    sp.add_argument("--dir", required=True)
    sp.add_argument("--pg-dsn", help="PostgreSQL to build on (default: APIM_UPGRADE_PG_DSN or 127.0.0.1:5432)")
    sp.add_argument("--scale", type=int, default=1, help="data volume (100: about a million tokens)")
    sp.add_argument("--dbscripts", help="a WSO2 4.0.0 pack's dbscripts/ folder (default: compact schema)")
    sp = add("start", cmd_sandbox_start, sb, "start a sandbox's 4.0.0 control plane and gateways (its 'production')")
    sp.add_argument("plan")
    sp.add_argument(
        "--traffic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also start its traffic generator (tokens, applications, subscriptions, API calls; default: on)",
    )
    _traffic_options(sp)
    tr = sb.add_parser("traffic", help="the sandbox's traffic generator and its ledger").add_subparsers(
        dest="traffic_command", required=True
    )
    sp = add("start", cmd_sandbox_traffic_start, tr, "start the traffic generator in the background")
    sp.add_argument("plan")
    _traffic_options(sp)
    sp = add("stop", cmd_sandbox_traffic_stop, tr, "stop the traffic generator (after its call in flight)")
    sp.add_argument("plan")
    sp = add("status", cmd_sandbox_traffic_status, tr, "whether it runs, and what its ledger holds")
    sp.add_argument("plan")
    sp = add("destroy", cmd_sandbox_destroy, sb, "stop a sandbox's nodes and drop its databases")
    sp.add_argument("plan")

    sp = add("demo", cmd_demo, sub, "rehearse every phase on a fresh sandbox")
    sp.add_argument("--scale", type=int, default=1)
    sp.add_argument("--dir", help="where to keep the sandbox (default: a temporary directory)")
    sp.add_argument("--keep", action="store_true", help="keep the sandbox databases afterwards")
    return p


def _traffic_options(sp: argparse.ArgumentParser) -> None:
    # Defaults live in sandbox/traffic.py (not imported here: --help stays light).
    sp.add_argument("--rate", type=float, help="rounds per second, a token and an API call each (default 4)")
    sp.add_argument("--app-every", type=int, help="rounds between a new application and subscription (default 10)")


class Terminated(BaseException):
    """SIGTERM: unwinds like Ctrl-C, so servers and locks are released on the way out."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli_reports_failures()
    if not args.traceback:
        hide_known_tracebacks()
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return int(args.func(args))
    except Terminated:
        print("FAILED: stopped by SIGTERM; rerun the same command to resume where it stopped", file=sys.stderr)
        return 143
    except ApimUpgradeError as exc:
        if args.traceback:
            traceback.print_exc()
        print(f"FAILED: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a full disk, however a library wrapped it, is one line; the rest re-raised
        full = disk_full_in(exc)
        if full is None:
            raise
        print(f"FAILED: {full}", file=sys.stderr)
        return DiskFull.exit_code
    except KeyboardInterrupt:
        print("FAILED: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
