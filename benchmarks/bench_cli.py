"""Benchmark: ``apim-upgrade --help`` start-up against a bare interpreter start (target: under 1 s)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Context, Row, run_measured

NAME = "cli-startup"
REPS = 5


def bench(ctx: Context, scale: int) -> None:
    del scale  # no data involved: measured once per run
    if ctx.extras.get(NAME):
        return
    entry = Path(sys.executable).with_name("apim-upgrade")
    command = [str(entry), "--help"] if entry.exists() else [sys.executable, "-m", "commands.cli", "--help"]
    env = ctx.env()
    python = statistics.median(run_measured([sys.executable, "-c", "pass"], env).seconds for _ in range(REPS))
    runs = [run_measured(command, env) for _ in range(REPS)]
    wall = statistics.median(r.seconds for r in runs)
    ctx.rows.append(
        Row(NAME, 0, "python -c pass", python, wall, "< 1 s", None, met_override=wall < 1.0, note="scale n/a")
    )
    ctx.note(
        NAME,
        f"`{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(command))}`: {wall:.2f} s (median of {REPS}),"
        f" peak RSS {max(r.peak_mb.get('flow', 0) for r in runs):.0f} MB; bare interpreter {python:.2f} s."
        " prefect, great_expectations, pandas, sqlalchemy and psycopg are not imported (tests/test_cli_startup.py)",
    )


if __name__ == "__main__":
    from benchmarks.run_all import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
