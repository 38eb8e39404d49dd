"""Incremental gates: exact counts, but only of the tables a step may have changed.

Against a real PostgreSQL: a change the gate cannot prove absent is always counted (a delete
through a function call, an insert into a table no statement names, a TRUNCATE, a commit by
another session just before the gate), and a step that changes no count (UPDATE, ADD COLUMN)
leaves the large tables uncounted, as the snapshot's own record says.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from apim_upgrade.errors import GateFailed
from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import catalog, db, history
from apim_upgrade.postgres.catalog import take_snapshot
from flows.phases import run_phase
from tests.test_schema_upgrade import at_420 as at_420_fixture  # noqa: F401  (fixture)

BIG, SMALL, OTHER = "big_table", "small_table", "never_named"


@pytest.fixture
def scratch(pg: db.PgServer) -> Iterator[str]:
    name = f"incr_{uuid.uuid4().hex[:10]}"
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, f'CREATE DATABASE "{name}"')
    with db.session(pg, name) as conn:
        db.execute_script(
            conn,
            f"CREATE TABLE {BIG} (id int PRIMARY KEY, v text);"
            f"INSERT INTO {BIG} SELECT g, 'x' FROM generate_series(1, 20000) g;"
            f"CREATE TABLE {SMALL} (id int PRIMARY KEY, v text);"
            f"INSERT INTO {SMALL} SELECT g, 'y' FROM generate_series(1, 10) g;"
            f"CREATE TABLE {OTHER} (id int);"
            f"CREATE FUNCTION drop_one() RETURNS void LANGUAGE sql AS $$ DELETE FROM {BIG} WHERE id = 7 $$;"
            f"CREATE FUNCTION add_one() RETURNS void LANGUAGE sql AS $$ INSERT INTO {OTHER} VALUES (1) $$;",
        )
    yield name
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(pg: db.PgServer, dbname: str, text: str) -> None:
    with db.session(pg, dbname) as conn:
        db.execute_script(conn, text)


def test_nothing_changed_counts_nothing(pg: db.PgServer, scratch: str) -> None:
    base = take_snapshot(pg, scratch)
    assert base.counted is None and base.facts[BIG].ins == 20000
    after = take_snapshot(pg, scratch, base=base)
    assert after.counted == [] and set(after.proven) == {BIG, SMALL, OTHER}
    assert after.row_counts == base.row_counts


@pytest.mark.parametrize(
    ("change", "table", "expected"),
    [
        ("SELECT drop_one()", BIG, 19999),
        ("SELECT add_one()", OTHER, 1),
        (f"TRUNCATE {SMALL}", SMALL, 0),
        (
            f"BEGIN; TRUNCATE {SMALL}; INSERT INTO {SMALL} SELECT g, 'z' FROM generate_series(1, 10) g; COMMIT",
            SMALL,
            10,
        ),
    ],
)
def test_every_count_change_is_counted(pg: db.PgServer, scratch: str, change: str, table: str, expected: int) -> None:
    base = take_snapshot(pg, scratch)
    _run(pg, scratch, change)
    after = take_snapshot(pg, scratch, base=base)
    assert table in (after.counted or []), after.count_reasons
    assert after.row_counts[table] == expected


def test_update_and_add_column_count_nothing(pg: db.PgServer, scratch: str) -> None:
    base = take_snapshot(pg, scratch)
    _run(pg, scratch, f"UPDATE {BIG} SET v = 'u'; ALTER TABLE {BIG} ADD COLUMN extra int DEFAULT 0")
    after = take_snapshot(pg, scratch, base=base)
    assert after.counted == [] and BIG in after.proven


def test_commit_by_a_session_still_connected_is_caught(
    pg: db.PgServer, scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "SETTLE_SECONDS", 0.3)
    base = take_snapshot(pg, scratch)
    other = db.connect(pg, scratch)
    try:
        db.execute(other, f"DELETE FROM {BIG} WHERE id = 9")
        other.commit()  # committed; its counters may sit unflushed in the idle session for a second
        after = take_snapshot(pg, scratch, base=base)
        assert after.row_counts[BIG] == 19999
        assert "other sessions" in after.count_reasons[BIG]
        # Uncommitted: not in this state, and the gate after the commit sees it.
        db.execute(other, f"DELETE FROM {BIG} WHERE id = 10")
        pending = take_snapshot(pg, scratch, base=after)
        assert pending.row_counts[BIG] == 19999
        other.commit()
    finally:
        other.close()
    final = take_snapshot(pg, scratch, base=pending)
    assert final.row_counts[BIG] == 19998 and BIG in (final.counted or [])


def test_commit_by_a_session_that_just_ended_is_caught(pg: db.PgServer, scratch: str) -> None:
    for i in range(5):  # the writer disconnects right before the gate, repeatedly
        base = take_snapshot(pg, scratch)
        _run(pg, scratch, f"DELETE FROM {BIG} WHERE id = {100 + i}")
        after = take_snapshot(pg, scratch, base=base)
        assert after.row_counts[BIG] == 20000 - 1 - i, after.count_reasons


def test_statistics_reset_counts_everything(pg: db.PgServer, scratch: str) -> None:
    base = take_snapshot(pg, scratch)
    _run(pg, scratch, "SELECT pg_stat_reset()")
    after = take_snapshot(pg, scratch, base=base)
    assert set(after.counted or []) == {BIG, SMALL, OTHER} and "reset" in after.count_reasons[BIG]


def test_a_checkpoint_is_taken_with_no_session_of_ours_open(pg: db.PgServer, scratch: str) -> None:
    """history.checkpoint stores what it takes; a session of its own left open while it takes it
    would make the incremental snapshot wait for that session and then count every table."""
    base = take_snapshot(pg, scratch)
    start = time.monotonic()
    snap = history.checkpoint(pg, scratch, "phase", "before-apim", lambda: take_snapshot(pg, scratch, base=base))
    assert snap.counted == [] and set(snap.proven) == {BIG, SMALL, OTHER}, snap.count_reasons
    assert time.monotonic() - start < catalog.SETTLE_SECONDS
    again = history.checkpoint(pg, scratch, "phase", "before-apim", lambda: pytest.fail("taken twice"))
    assert again.digest() == snap.digest()


# --- the gates themselves, through the phases ---------------------------------------------------


def _audit(plan_dir: Path, step: str) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in (plan_dir / "audit.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in lines if r.get("step") == step]


@pytest.fixture
def script_plan(
    request: pytest.FixtureRequest,
    prefect_api: None,
    pg: db.PgServer,
    tmp_path: Path,
) -> Iterator[tuple[Path, str, int]]:
    """A plan at 4.2.0 with one script 4.2.0 -> 4.3.0 (body written by the test); its largest table."""
    plan_path: Path = request.getfixturevalue("at_420_fixture")
    plan = load_plan(plan_path)
    before = take_snapshot(pg, plan.databases.apim.target)
    largest = max(before.row_counts, key=lambda t: before.row_counts[t])
    other = "x_unnamed"  # a customer table no statement of the script names
    with db.session(pg, plan.databases.apim.target) as conn:
        db.execute_script(
            conn,
            f"CREATE TABLE {other} (id int); INSERT INTO {other} VALUES (1); "
            f'ALTER TABLE {other} OWNER TO "{plan.databases.apim.owner}"',
        )
    yield plan_path, largest, before.row_counts[largest], other


def _apply(plan_path: Path, tmp_path: Path, body: str) -> None:
    from tests.test_schema_upgrade import COMPACT, _section, _write_section

    script = tmp_path / "custom-4.2.0-to-4.3.0.sql"
    script.write_text(body)
    section = _section([("4.2.0", "4.3.0", script)])
    scripts = section["schema_upgrade"]["scripts"]  # type: ignore[index]
    scripts[0]["dbscripts"] = str(COMPACT / "4.2.0")  # the body keeps the 4.2.0 schema
    section["schema_upgrade"]["target_dbscripts"] = str(COMPACT / "4.2.0")  # type: ignore[index]
    _write_section(plan_path, section)
    run_phase("schema-upgrade", load_plan(plan_path))


@pytest.mark.parametrize(
    "body",
    [
        "CREATE FUNCTION x_drop() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
        "DELETE FROM {largest} WHERE ctid = (SELECT min(ctid) FROM {largest}); END $$;\nSELECT x_drop();\n"
        "DROP FUNCTION x_drop();\n",
        "CREATE FUNCTION x_add() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
        "EXECUTE 'INSERT INTO ' || '{other} SELECT * FROM {other} LIMIT 1'; END $$;\n"
        "SELECT x_add();\nDROP FUNCTION x_add();\n",
        "TRUNCATE {largest} CASCADE;\n",
    ],
    ids=["delete-through-function", "insert-into-unnamed-table", "truncate"],
)
def test_script_changing_a_count_fails_its_gate(
    script_plan: tuple[Path, str, int, str], pg: db.PgServer, tmp_path: Path, body: str
) -> None:
    plan_path, largest, rows, other = script_plan
    with pytest.raises(GateFailed) as err:
        _apply(plan_path, tmp_path, body.format(largest=largest, other=other))
    text = str(err.value)
    table = other if "x_add" in body else largest
    assert table in text, text
    if "x_drop" in body:
        assert str(rows) in text and str(rows - 1) in text, text


def test_script_updating_and_adding_columns_counts_no_large_table(
    script_plan: tuple[Path, str, int, str], pg: db.PgServer, tmp_path: Path
) -> None:
    plan_path, largest, _, _ = script_plan
    body = f"ALTER TABLE {largest} ADD COLUMN x_note VARCHAR(10);\nUPDATE {largest} SET x_note = 'n';\n"
    with pytest.raises(GateFailed) as err:  # conformance with 4.2.0 names the extra column; the count gate passed
        _apply(plan_path, tmp_path, body)
    assert "conformance" in str(err.value), str(err.value)
    record = _audit(load_plan(plan_path).work_dir, "validate_script")
    details = record[-1]["details"]
    assert isinstance(details, dict)
    assert largest not in details["counted_tables"], details["count_reasons"]
    assert largest in details["proven_unchanged"]


# --- a stand-in JVM step that changes data (the hook the stand-in server offers tests) --------------

UNNAMED = "x_unnamed"  # a customer table the identity migration never names
UNREFERENCED_AM_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'am\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.confrelid = c.oid)
"""


@pytest.fixture
def jvm_step(jvm_sandbox: Path, pg: db.PgServer, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, int]]:
    """A verified copy ready for identity-migration, a customer table added; the API-M copy's counts.

    SQL set by the test in APIM_STANDIN_EXTRA_SQL runs inside the identity run only.
    """
    plan = load_plan(jvm_sandbox)
    run_phase("migration-environment", plan)
    target = plan.databases.apim.target
    with db.session(pg, target) as conn:
        db.execute_script(
            conn,
            f"CREATE TABLE {UNNAMED} (id int); INSERT INTO {UNNAMED} VALUES (1); "
            f'ALTER TABLE {UNNAMED} OWNER TO "{plan.databases.apim.owner}"',
        )
    monkeypatch.setenv("APIM_STANDIN_EXTRA_SQL_STEP", "identity")
    return jvm_sandbox, take_snapshot(pg, target).row_counts


def _gate_record(plan_path: Path) -> dict[str, object]:
    record = _audit(load_plan(plan_path).work_dir, "validate_migration")[-1]
    details = record["details"]
    assert isinstance(details, dict)
    return details


def test_jvm_step_changing_counts_fails_its_gate_naming_each_table(
    jvm_step: tuple[Path, dict[str, int]], pg: db.PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_path, counts = jvm_step
    largest = max(counts, key=lambda t: counts[t])
    with db.session(pg, load_plan(plan_path).databases.apim.target, read_only=True) as conn:
        candidates = {str(r[0]) for r in db.fetch_all(conn, UNREFERENCED_AM_TABLES)}
    truncated = min((t for t in candidates if counts.get(t, 0) > 0 and t != largest), key=lambda t: counts[t])
    # One JVM run, three changes a count-only-what-is-named gate would miss: a delete inside a
    # function call, an insert into a table through dynamic SQL, a TRUNCATE (a new relfilenode).
    monkeypatch.setenv(
        "APIM_STANDIN_EXTRA_SQL",
        "CREATE FUNCTION x_drop() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
        f"DELETE FROM {largest} WHERE ctid = (SELECT min(ctid) FROM {largest}); END $$;\n"
        "SELECT x_drop(); DROP FUNCTION x_drop();\n"
        "CREATE FUNCTION x_add() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
        f"EXECUTE 'INSERT INTO ' || '{UNNAMED} VALUES (2)'; END $$;\n"
        "SELECT x_add(); DROP FUNCTION x_add();\n"
        f"TRUNCATE {truncated};\n",
    )
    with pytest.raises(GateFailed) as err:
        run_phase("identity-migration", load_plan(plan_path))
    text = str(err.value)
    for table, before, after in (
        (largest, counts[largest], counts[largest] - 1),
        (UNNAMED, 1, 2),
        (truncated, counts[truncated], 0),
    ):
        segment = next((s for s in re.split(r"[;\n]", text) if re.search(rf"\b{table}\b", s)), "")
        assert re.search(rf"\b{before}\b", segment) and re.search(rf"\b{after}\b", segment), (table, text)
    counted = _gate_record(plan_path)["apim"]["counted_tables"]  # type: ignore[index]
    assert {largest, UNNAMED, truncated} <= set(counted)


def test_jvm_step_updating_rows_counts_no_large_table(
    jvm_step: tuple[Path, dict[str, int]], pg: db.PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_path, counts = jvm_step
    plan = load_plan(plan_path)
    largest = max(counts, key=lambda t: counts[t])
    column = take_snapshot(pg, plan.databases.apim.target).columns[largest][0].name
    monkeypatch.setenv("APIM_STANDIN_EXTRA_SQL", f"UPDATE {largest} SET {column} = {column};")
    updated_before = _updates(pg, plan.databases.apim.target, largest)
    assert run_phase("identity-migration", plan) == "migrated"
    assert _updates(pg, plan.databases.apim.target, largest) >= updated_before + counts[largest]  # it did run
    details = _gate_record(plan_path)["apim"]
    assert isinstance(details, dict)
    assert largest not in details["counted_tables"], details["count_reasons"]
    assert largest in details["proven_unchanged"]
    assert counts[largest] > 10 * min(counts.values()) + 100  # the sandbox's largest is worth not counting


def _updates(pg: db.PgServer, dbname: str, table: str) -> int:
    with db.session(pg, dbname, read_only=True) as conn:
        row = db.fetch_one(conn, "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = %s", (table,))
    return int(row[0]) if row else 0
