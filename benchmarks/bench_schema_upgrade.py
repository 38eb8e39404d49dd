"""Benchmark: the schema-upgrade phase against plain ``psql -1 -f`` of the same scripts.

At two (or more) scales, on identical copies of a 4.0.0 sandbox brought to the 4.2.0 schema:

* floor   ``psql -v ON_ERROR_STOP=1 -1 -f`` of the 4.2.0->4.3.0 and 4.3.0->4.4.0 scripts,
* phase   ``apim-upgrade run PLAN --phase schema-upgrade`` against a running ``prefect server``,

and prints wall times, the ratio, and the share of the phase spent in its gates
(snapshots, GX validations and the conformance check, from the audit trail).
Usage::

    uv run python benchmarks/bench_schema_upgrade.py [--scales 10 50] [--dbscripts-root DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apim_upgrade import audit, db, queries  # noqa: E402
from apim_upgrade.pgserver import find_server  # noqa: E402
from apim_upgrade.plan import load_plan  # noqa: E402
from sandbox.create import create_sandbox  # noqa: E402
from sandbox.estate import drop_estate  # noqa: E402
from sandbox.prefect_server import start_prefect_server, stop_prefect_server  # noqa: E402
from sandbox.schema_sync import apply_sync, generate_upgrade_script, sync_statements  # noqa: E402

GENUINE = next(
    (p for p in (ROOT.parent / "shared/wso2/dbscripts", Path("/work/shared/wso2/dbscripts")) if p.is_dir()), None
)
COMPACT = ROOT / "sandbox" / "sql" / "compact"
GATE_STEPS = {"snapshot_target", "validate_script", "check_conformance", "check_script_history"}


def copy_at_420(server: db.PgServer, source: str, target: str, owner: str, ddl: Path) -> None:
    with db.session(server, "postgres", autocommit=True) as conn:
        db.execute(conn, queries.create_database_from_template(target, source, owner, None))
    apply_sync(server, target, sync_statements(server, target, ddl), role=owner)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--dbscripts-root", type=Path, default=GENUINE or COMPACT)
    args = parser.parse_args()
    root: Path = args.dbscripts_root
    handle = find_server()
    server = handle.server
    work = Path(tempfile.mkdtemp(prefix="apim-bench-schema-"))
    port = 4800 + os.getpid() % 500
    prefect = start_prefect_server(work / "prefect-home", port)
    env = dict(
        os.environ,
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        GX_ANALYTICS_ENABLED="False",
        PREFECT_HOME=str(work / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
    )
    scripts = []
    for old, new in (("4.2.0", "4.3.0"), ("4.3.0", "4.4.0")):
        out = work / f"{old}-{new}.sql"
        generate_upgrade_script(
            server,
            root / old / "apimgt/postgresql.sql",
            root / new / "apimgt/postgresql.sql",
            out,
            title=f"{old} -> {new}",
        )
        scripts.append((old, new, out))
    rows = []
    names: list[str] = []
    try:
        for scale in args.scales:
            plan_path, summary = create_sandbox(
                work / f"s{scale}",
                server,
                scale=scale,
                dbscripts=root / "4.0.0" if root != COMPACT else None,
                with_distribution=False,
            )
            plan = load_plan(plan_path)
            apim, shared = plan.databases.apim, plan.databases.shared
            floor_db = f"{apim.target}_floor"
            names += [apim.source, shared.source, apim.target, shared.target, floor_db]
            for target in (apim.target, floor_db):
                copy_at_420(server, apim.source, target, apim.owner, root / "4.2.0" / "apimgt/postgresql.sql")
            copy_at_420(server, shared.source, shared.target, shared.owner, root / "4.2.0" / "postgresql.sql")
            section = {
                "schema_upgrade": {
                    "scripts": [
                        {"from_version": a, "to_version": b, "path": str(p), "dbscripts": str(root / b)}
                        for a, b, p in scripts
                    ],
                    "target_dbscripts": str(root / "4.4.0"),
                }
            }
            plan_path.write_text(plan_path.read_text() + "\n" + tomli_w.dumps(section))

            start = time.perf_counter()
            for _, _, script in scripts:
                subprocess.run(
                    [
                        "psql",
                        "-h",
                        server.host,
                        "-p",
                        str(server.port),
                        "-U",
                        server.user,
                        "-q",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-1",
                        "-f",
                        str(script),
                        floor_db,
                    ],
                    check=True,
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
            floor = time.perf_counter() - start

            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "apim_upgrade.cli", "run", str(plan_path), "--phase", "schema-upgrade"],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
            )
            phase = time.perf_counter() - start
            records = [r for r in audit.read_records(plan.audit_path) if r.ended_at]
            seconds = {r.step: 0.0 for r in records}
            for r in records:
                seconds[r.step] += (r.ended_at - r.started_at).total_seconds()  # type: ignore[operator]
            gates = sum(v for k, v in seconds.items() if k in GATE_STEPS)
            applied = seconds.get("apply_sql_script", 0.0)
            rows.append((scale, summary.access_tokens, floor, phase, applied, gates))
    finally:
        drop_estate(server, *names)
        stop_prefect_server(prefect)
        handle.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nschema-upgrade vs psql -1 -f  (DDL {root}; prefect server running)")
    print(
        f"{'scale':>5} {'tokens':>9} {'psql -1 -f s':>12} {'phase s':>8} {'ratio':>6} {'scripts s':>9} "
        f"{'gates s':>8} {'gates % of phase':>16} {'gates / scripts':>15}"
    )
    for scale, tokens, floor, phase, applied, gates in rows:
        print(
            f"{scale:>5} {tokens:>9} {floor:>12.2f} {phase:>8.2f} {phase / floor:>6.1f} {applied:>9.2f} "
            f"{gates:>8.2f} {100 * gates / phase:>15.0f}% {gates / max(applied, 1e-9):>15.2f}"
        )


if __name__ == "__main__":
    main()
