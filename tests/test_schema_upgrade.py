"""schema-upgrade: atomic scripts, history and drift, the advisory lock, dry run, conformance."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomli_w

from apim_upgrade.errors import ApimUpgradeError, GateFailed
from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import bookkeeping, db, queries, schema_runner
from apim_upgrade.postgres.catalog import take_snapshot
from apim_upgrade.postgres.schema_diff import read_catalog
from commands.cli import main
from flows.phases import run_phase
from sandbox.schema_sync import copy_at_version, generate_upgrade_script

pytestmark = pytest.mark.usefixtures("prefect_api")
COMPACT = Path(__file__).resolve().parents[1] / "sandbox" / "sql" / "compact"
APIM_DDL = Path("apimgt") / "postgresql.sql"


@pytest.fixture(scope="module")
def standin_scripts(pg: db.PgServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("scripts")
    scripts = {}
    for old, new in (("4.2.0", "4.3.0"), ("4.3.0", "4.4.0")):
        scripts[new] = generate_upgrade_script(
            pg,
            COMPACT / old / APIM_DDL,
            COMPACT / new / APIM_DDL,
            out / f"{old}-{new}.sql",
            title=f"{old} -> {new}",
        )
    return scripts


def _section(scripts: list[tuple[str, str, Path]], **extra: object) -> dict[str, object]:
    return {
        "schema_upgrade": {
            "start_version": "4.2.0",
            "scripts": [
                {"from_version": a, "to_version": b, "path": str(p), "dbscripts": str(COMPACT / b)}
                for a, b, p in scripts
            ],
            "target_dbscripts": str(COMPACT / "4.4.0"),
            **extra,
        }
    }


@pytest.fixture
def at_420(make_sandbox: Callable[..., Path], pg: db.PgServer) -> Iterator[Path]:
    """A plan whose copies hold a 4.0.0 estate brought to the 4.2.0 schema, with its data."""
    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    for role, ddl in (("apim", APIM_DDL), ("shared", Path("postgresql.sql"))):
        pair = plan.databases.roles()[role]
        copy_at_version(pg, pair.source, pair.target, pair.owner, COMPACT / "4.2.0" / ddl)
    yield plan_path


def _write_section(plan_path: Path, section: dict[str, object]) -> None:
    plan_path.write_text(plan_path.read_text() + "\n" + tomli_w.dumps(section))


def _state(pg: db.PgServer, dbname: str) -> tuple[str, str]:
    snap = take_snapshot(pg, dbname)
    return snap.digest(), read_catalog(pg, dbname).model_dump_json()


FAILING_SCRIPT = """\
-- A vendor-style script whose 7th statement fails.
ALTER TABLE am_api ADD COLUMN demo_flag VARCHAR(10) DEFAULT 'x';
UPDATE am_api SET demo_flag = 'y' WHERE api_id % 2 = 0;
CREATE INDEX idx_demo_flag ON am_api (demo_flag);
CREATE TABLE am_demo (id INTEGER PRIMARY KEY, name VARCHAR(20));
INSERT INTO am_demo VALUES (1, 'one');
DO $$ BEGIN
  UPDATE am_subscriber SET email_address = lower(email_address); -- a body with ; inside
END $$;

ALTER TABLE am_no_such_table ADD COLUMN x INTEGER;
ALTER TABLE am_api ADD COLUMN never_applied INTEGER;
"""


def test_failing_seventh_statement_leaves_database_exactly_as_before(
    at_420: Path, pg: db.PgServer, tmp_path: Path
) -> None:
    script = tmp_path / "broken-4.2.0-to-4.3.0.sql"
    script.write_text(FAILING_SCRIPT)
    _write_section(at_420, _section([("4.2.0", "4.3.0", script)]))
    plan = load_plan(at_420)
    before = _state(pg, plan.databases.apim.target)
    with pytest.raises(schema_runner.ScriptFailed) as err:
        run_phase("schema-upgrade", plan)
    message = str(err.value)
    assert str(script) in message
    assert "statement 7 of 8 (line 11: 'ALTER TABLE am_no_such_table ADD COLUMN x INTEGER')" in message
    assert "SQLSTATE 42P01" in message and 'relation "am_no_such_table" does not exist' in message
    assert _state(pg, plan.databases.apim.target) == before
    with db.session(pg, plan.databases.apim.target, read_only=True) as conn:
        assert schema_runner.read_history(conn) == []


def test_chain_conforms_then_rerun_skips_and_drift_is_refused(
    at_420: Path,
    pg: db.PgServer,
    standin_scripts: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = tmp_path / "a.sql"
    first.write_text(standin_scripts["4.3.0"].read_text())
    _write_section(at_420, _section([("4.2.0", "4.3.0", first), ("4.3.0", "4.4.0", standin_scripts["4.4.0"])]))
    plan = load_plan(at_420)

    # Dry run: prints every statement with its line, changes nothing.
    before = _state(pg, plan.databases.apim.target)
    assert main(["run", str(at_420), "--phase", "schema-upgrade", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "-- a.sql (4.2.0 -> 4.3.0)" in out and "-- statement 1, line" in out and "COMMIT;" in out
    assert _state(pg, plan.databases.apim.target) == before

    assert run_phase("schema-upgrade", plan).startswith("2 script(s) applied")
    with db.session(pg, plan.databases.apim.target, read_only=True) as conn:
        history = schema_runner.read_history(conn)
    assert [(h.from_version, h.to_version, h.sha256) for h in history] == [
        ("4.2.0", "4.3.0", hashlib.sha256(first.read_bytes()).hexdigest()),
        ("4.3.0", "4.4.0", hashlib.sha256(standin_scripts["4.4.0"].read_bytes()).hexdigest()),
    ]
    assert run_phase("schema-upgrade", plan).startswith("0 script(s) applied, 2 already applied")

    first.write_text(first.read_text() + "\n-- edited after it was applied\n")
    with pytest.raises(schema_runner.ScriptDrift, match=r"a\.sql recorded sha256"):
        run_phase("schema-upgrade", plan)
    assert run_phase("schema-upgrade", plan, rebaseline=True).startswith("0 script(s) applied")


def test_order_enforced(at_420: Path, standin_scripts: dict[str, Path]) -> None:
    _write_section(
        at_420,
        _section([("4.3.0", "4.4.0", standin_scripts["4.4.0"]), ("4.2.0", "4.3.0", standin_scripts["4.3.0"])]),
    )
    with pytest.raises(ApimUpgradeError, match=r"from 4\.3\.0, but the previous step ends at 4\.2\.0"):
        run_phase("schema-upgrade", load_plan(at_420))


def test_concurrent_run_refused_naming_the_holder(
    at_420: Path, pg: db.PgServer, standin_scripts: dict[str, Path]
) -> None:
    _write_section(at_420, _section([("4.2.0", "4.3.0", standin_scripts["4.3.0"])]))
    plan = load_plan(at_420)
    with schema_runner.upgrade_lock(pg, plan.databases.apim.target, "rehearsal-by-alice"):
        with pytest.raises(schema_runner.UpgradeLocked, match="'rehearsal-by-alice'"):
            run_phase("schema-upgrade", plan)
    with db.session(pg, plan.databases.apim.target, read_only=True) as conn:
        assert schema_runner.read_history(conn) == []


def test_conformance_finds_dropped_column_missing_index_and_changed_type(
    at_420: Path, pg: db.PgServer, standin_scripts: dict[str, Path]
) -> None:
    from tasks.schema import check_conformance

    _write_section(
        at_420,
        _section([("4.2.0", "4.3.0", standin_scripts["4.3.0"]), ("4.3.0", "4.4.0", standin_scripts["4.4.0"])]),
    )
    plan = load_plan(at_420)
    assert "conforms to 4.4.0" in run_phase("schema-upgrade", plan)  # the full stand-in chain conforms
    with db.session(pg, plan.databases.apim.target) as conn:  # someone "customises" the estate
        db.execute(conn, "ALTER TABLE am_api DROP COLUMN log_level")
        db.execute(conn, "DROP INDEX idx_aai_org")
        db.execute(conn, "ALTER TABLE am_subscriber ALTER COLUMN email_address TYPE VARCHAR(300)")
    with pytest.raises(GateFailed) as err:
        check_conformance(plan, COMPACT / "4.4.0", "440")
    text = str(err.value)
    keys = [
        "column_missing:am_api.log_level",
        "index_missing:am_api.idx_aai_org",
        "column_type:am_subscriber.email_address",
    ]
    assert all(k in text for k in keys), text
    assert "Data Docs:" in text

    # Differences the plan lists as accepted no longer fail the phase.
    plan_text = at_420.read_text().replace(
        "target_dbscripts = ",
        "accepted_differences = [" + ", ".join(f'"{k}"' for k in keys) + "]\ntarget_dbscripts = ",
    )
    at_420.write_text(plan_text)
    rows = check_conformance(load_plan(at_420), COMPACT / "4.4.0", "440")
    assert {r["key"] for r in rows} == set(keys) and all(r["accepted"] for r in rows)


def test_failed_gate_is_not_bypassed_by_a_rerun(at_420: Path, pg: db.PgServer, tmp_path: Path) -> None:
    script = tmp_path / "deletes-4.2.0-to-4.3.0.sql"
    script.write_text(
        "DELETE FROM am_subscription WHERE subscription_id IN "
        "(SELECT subscription_id FROM am_subscription ORDER BY 1 LIMIT 3);\n"
    )
    _write_section(at_420, _section([("4.2.0", "4.3.0", script)]))
    plan = load_plan(at_420)
    for _ in range(2):  # the rerun skips the applied script but still judges it against the first "before"
        with pytest.raises(GateFailed, match=r"row count changed .*table_name=am_subscription"):
            run_phase("schema-upgrade", plan)
    at_420.write_text(
        at_420.read_text().replace(
            f'path = "{script}"', f'path = "{script}"\nexpected_row_changes = ["am_subscription"]'
        )
    )
    plan = load_plan(at_420)
    with pytest.raises(GateFailed) as err:  # counts now pass; the script never made 4.3.0's columns
        run_phase("schema-upgrade", plan)
    assert "row count changed" not in str(err.value)
    assert "required tables and columns present: missing (4): am_api_url_mapping.log_level" in str(err.value)


def test_customised_source_is_reported_before_anything_starts(
    make_sandbox: Callable[..., Path], pg: db.PgServer, standin_scripts: dict[str, Path]
) -> None:
    from apim_upgrade.proof import audit

    plan_path = make_sandbox()
    _write_section(
        plan_path, _section([("4.2.0", "4.3.0", standin_scripts["4.3.0"])], source_dbscripts=str(COMPACT / "4.0.0"))
    )
    plan = load_plan(plan_path)
    with db.session(pg, plan.databases.apim.source) as conn:  # an operator's own index in production
        db.execute(conn, "CREATE INDEX my_custom_idx ON am_api (api_name)")
    assert run_phase("prepare-databases", plan)["apim"] == "copied and verified"  # reported, not fatal
    record = next(r for r in audit.read_records(plan.audit_path) if r.step == "check_conformance")
    assert record.phase == "prepare-databases" and record.outcome == "succeeded"
    assert record.details["differences"] == 1 and record.details["unaccepted"] == 1


def _untouched(pg: db.PgServer, dbname: str) -> tuple[object, ...]:
    """The WSO2 schema, apim-upgrade's own schema (catalogue and rows) and the copy's marker."""
    with db.session(pg, dbname, read_only=True) as conn:
        own = db.fetch_all(conn, queries.CATALOG_COLUMNS, (queries.HISTORY_SCHEMA,))
    return (
        _state(pg, dbname),
        own,
        take_snapshot(pg, dbname, queries.HISTORY_SCHEMA).row_counts,
        bookkeeping.state(pg, dbname),
    )


def test_dry_run_walks_the_run_itself_roles_locks_history_and_changes_nothing(
    at_420: Path, pg: db.PgServer, standin_scripts: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _write_section(
        at_420,
        _section([("4.2.0", "4.3.0", standin_scripts["4.3.0"]), ("4.3.0", "4.4.0", standin_scripts["4.4.0"])]),
    )
    plan = load_plan(at_420)
    target, owner = plan.databases.apim.target, plan.databases.apim.owner
    assert bookkeeping.state(pg, target).version == 0  # a copy without bookkeeping: the run would create it
    before = _untouched(pg, target)

    assert main(["run", str(at_420), "--phase", "schema-upgrade", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert _untouched(pg, target) == before, "the dry run wrote to the database"

    def at(text: str, start: int = 0) -> int:
        return next(i for i, line in enumerate(lines) if i >= start and text in line)

    # The session lock first, on its own autocommit session; released last.
    lock = at(f"SELECT pg_try_advisory_lock({queries.ADVISORY_NAMESPACE}, hashtext('{target}'));")
    assert (
        "autocommit" in lines[lock - 1]
        and f"application_name 'apim-upgrade {plan.name} schema-upgrade'" in lines[lock - 1]
    )
    assert lines[-1] == f"SELECT pg_advisory_unlock({queries.ADVISORY_NAMESPACE}, hashtext('{target}'));"
    # Each script: header, its transaction with the apply lock, role switch, statements, history row.
    for rank, (old, new) in enumerate((("4.2.0", "4.3.0"), ("4.3.0", "4.4.0")), start=1):
        name = standin_scripts[new].name
        header = at(f"-- {name} ({old} -> {new}), sha256")
        begin = at("BEGIN;", header)
        xact_lock = at(f"pg_try_advisory_xact_lock({queries.ADVISORY_NAMESPACE}, hashtext('apply:{target}'))", begin)
        role = at(f'SET LOCAL ROLE "{owner}";', xact_lock)
        first = at("-- statement 1, line", role)
        reset = at("RESET ROLE;", first)
        insert = at('INSERT INTO "apim_upgrade".schema_history', reset)
        assert f"({rank}, '{old}', '{new}', '{name}', '" in lines[insert]
        assert lines[insert + 1] == "COMMIT;"
        assert header < begin < xact_lock < role < first < reset < insert
    # The bookkeeping schema is created once, by the first script's transaction, as a run would.
    text = "\n".join(lines)
    assert text.count('CREATE SCHEMA IF NOT EXISTS "apim_upgrade"') == 1
    assert text.count('INSERT INTO "apim_upgrade".bookkeeping_version') == 1

    # After the run, the dry run shows both scripts skipped, still under the lock.
    assert run_phase("schema-upgrade", plan).startswith("2 script(s) applied")
    before = _untouched(pg, target)
    assert main(["run", str(at_420), "--phase", "schema-upgrade", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert _untouched(pg, target) == before
    assert sum("already applied, skipped" in line for line in lines) == 2
    assert not any(line.startswith(("BEGIN", "SET LOCAL ROLE", "INSERT")) for line in lines)
    assert lines[-1].startswith("SELECT pg_advisory_unlock(")
