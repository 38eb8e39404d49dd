"""`apim-upgrade --help` starts without the heavy libraries (the start-up benchmark's promise)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("prefect", "great_expectations", "pandas", "sqlalchemy", "psycopg")

# Runs the real entry point in a fresh interpreter and reports which top-level
# packages ended up imported, whatever the way `main` leaves (argparse exits).
PROBE = """
import json, sys
from commands.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _imported(*argv: str) -> tuple[object, set[str], str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60, check=False)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), out.stdout


def test_help_imports_no_heavy_library() -> None:
    code, modules, stdout = _imported("--help")
    assert code == 0
    assert "rehearse" in stdout and "sandbox" in stdout  # it really printed the help
    assert not modules & set(HEAVY), f"--help imported {sorted(modules & set(HEAVY))}"


def test_subcommand_help_and_usage_errors_stay_light() -> None:
    for argv in (["run", "--help"], ["audit", "verify", "--help"], ["no-such-verb"]):
        code, modules, _ = _imported(*argv)
        assert code == (2 if argv == ["no-such-verb"] else 0), argv
        assert not modules & set(HEAVY), f"{argv} imported {sorted(modules & set(HEAVY))}"


def test_the_probe_sees_a_heavy_import() -> None:
    """The probe itself works: a verb that needs psycopg does import it."""
    code, modules, _ = _imported("audit", "verify", "/nonexistent/audit.jsonl")
    assert code is not None
    assert "psycopg" in modules
