"""A customised source: reported by plan check and the report, carried through every gated step,
or explicitly accepted; nothing that existed before a step is gone after it unless WSO2 removes it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import tomli_w

from apim_upgrade.errors import GateFailed
from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import db
from apim_upgrade.postgres.catalog import Column, Constraint, Index, SchemaObject, Snapshot, take_snapshot
from apim_upgrade.postgres.schema_diff import ColumnDef, SchemaCatalog, TableDef, reference_catalog
from apim_upgrade.proof import audit
from apim_upgrade.proof.report import build_report
from apim_upgrade.proof.survival import survival
from commands.cli import main
from flows.phases import run_phase
from sandbox.create import sandbox_secrets
from sandbox.schema_sync import copy_at_version, generate_upgrade_script

COMPACT = Path(__file__).resolve().parents[1] / "sandbox" / "sql" / "compact"
APIM_DDL = Path("apimgt") / "postgresql.sql"
# The customer's own objects: one column (filled on up to 40 rows: every API of a scale-1 estate),
# one table, two indexes.
CUSTOMISE = [
    "ALTER TABLE am_api ADD COLUMN x_custom VARCHAR(64)",
    "UPDATE am_api SET x_custom = 'cost-centre-' || api_id "
    "WHERE api_id IN (SELECT api_id FROM am_api ORDER BY api_id LIMIT 40)",
    "CREATE TABLE x_api_audit (audit_id INTEGER PRIMARY KEY, api_id INTEGER, note VARCHAR(200))",
    "INSERT INTO x_api_audit SELECT api_id, api_id, 'reviewed' FROM am_api ORDER BY api_id LIMIT 7",
    "CREATE INDEX x_am_api_lower_name ON am_api (lower(api_name))",
    "CREATE INDEX x_am_subscription_status ON am_subscription (sub_status, api_id)",
]
CUSTOM_OBJECTS = [
    "column am_api.x_custom",
    "index am_api.x_am_api_lower_name",
    "index am_subscription.x_am_subscription_status",
    "table x_api_audit",
]


def _customise(pg: db.PgServer, dbname: str, owner: str) -> None:
    with db.session(pg, dbname) as conn:
        db.execute(conn, f'SET LOCAL ROLE "{owner}"')  # as the estate's own DBA would, as its owner
        for statement in CUSTOMISE:
            db.execute(conn, statement)


def _custom_state(pg: db.PgServer, dbname: str) -> dict[str, object]:
    with db.session(pg, dbname, read_only=True) as conn:
        filled = db.fetch_one(conn, "SELECT count(x_custom), count(DISTINCT x_custom) FROM am_api")
        audit_rows = db.fetch_one(conn, "SELECT count(*) FROM x_api_audit")
    snap = take_snapshot(pg, dbname)
    present = {o.label() for o in snap.objects()}
    return {
        "filled": filled,
        "audit_rows": audit_rows,
        "present": [o for o in CUSTOM_OBJECTS if o in present],
    }


# --------------------------------------------------------------------------- the rule


def _catalog(name: str, tables: dict[str, list[str]], indexes: dict[str, list[str]] | None = None) -> SchemaCatalog:
    column = ColumnDef(data_type="integer", nullable=True)
    return SchemaCatalog(
        database=f"ddl:{name}",
        db_schema="public",
        tables={
            t: TableDef(columns=dict.fromkeys(cols, column), indexes=dict.fromkeys((indexes or {}).get(t, []), "x"))
            for t, cols in tables.items()
        },
        sequences=[],
    )


def _snapshot(tables: dict[str, list[str]], indexes: tuple[tuple[str, str], ...] = ()) -> Snapshot:
    return Snapshot(
        database="db",
        db_schema="public",
        taken_at=datetime.now(UTC),
        row_counts=dict.fromkeys(tables, 0),
        columns={
            t: [Column(name=c, data_type="integer", size=None, nullable=True, default=None) for c in cols]
            for t, cols in tables.items()
        },
        indexes=[Index(table=t, name=n, definition="") for t, n in indexes],
        constraints=[Constraint(table="am_api", name="am_api_pkey", definition="PRIMARY KEY (api_id)")]
        if "am_api" in tables
        else [],
    )


def test_only_what_the_target_ddl_removes_by_name_may_go() -> None:
    old = _catalog(
        "4.0.0",
        {"am_key_manager": ["id", "tenant_domain"], "am_api": ["api_id", "api_name"], "am_old": ["id"]},
        {"am_api": ["am_api_name_key"]},
    )
    new = _catalog("4.2.0", {"am_key_manager": ["id", "organization"], "am_api": ["api_id", "api_name", "org"]})
    before = _snapshot(
        {
            "am_key_manager": ["id", "tenant_domain"],
            "am_api": ["api_id", "api_name", "x_custom"],
            "am_old": ["id"],
            "x_table": ["id"],
        },
        (("am_api", "am_api_name_key"), ("am_api", "x_idx")),
    )
    rule = survival(before, source_ddl=old, target_ddl=new)
    # Gone as WSO2 removes them: 4.0.0 has them, 4.2.0 does not (a removed table takes its columns).
    after = _snapshot(
        {
            "am_key_manager": ["id", "organization"],
            "am_api": ["api_id", "api_name", "org", "x_custom"],
            "x_table": ["id"],
        },
        (("am_api", "x_idx"),),
    )
    assert rule.vanished(after) == []
    assert rule.gone_as_allowed(after)["removed_by_target_ddl"] == [
        "column am_key_manager.tenant_domain",
        "column am_old.id",
        "index am_api.am_api_name_key",
        "table am_old",
    ]
    # Not removed by name: a customer's column, index, table; a column both versions have.
    worse = _snapshot({"am_key_manager": ["id"], "am_api": ["api_id"]})
    assert [o.label() for o in rule.vanished(worse)] == [
        "column am_api.api_name",
        "column am_api.x_custom",
        "column x_table.id",
        "index am_api.x_idx",
        "table x_table",
    ]
    no_key = _snapshot({"am_key_manager": ["id"], "x_table": ["id"]})
    assert "constraint am_api.am_api_pkey" in [o.label() for o in rule.vanished(no_key)]
    failures = rule.failures(worse, "apim_copy")
    assert any(
        "apim_copy: column am_api.x_custom existed before this step and is gone" in f
        and '[schema_upgrade] accepted_customisations = ["column:am_api.x_custom"]' in f
        for f in failures
    ), failures
    # Accepted in the plan: may go (a table with its columns); the rest still may not.
    accepted = survival(
        before,
        source_ddl=old,
        target_ddl=new,
        accepted={SchemaObject.parse_key("column:am_api.x_custom"), SchemaObject.parse_key("table:x_table")},
    )
    assert [o.label() for o in accepted.vanished(worse)] == [
        "column am_api.api_name",
        "index am_api.x_idx",
    ]
    # Without the source version's DDL nothing counts as removed by name.
    assert "column am_key_manager.tenant_domain" in [o.label() for o in survival(before, target_ddl=new).required()]
    # Present in the target DDL but not in the source's: added by WSO2, so not removed by it either.
    assert "column am_api.org" not in {o.label() for o in rule.removed_by_ddl}


def test_removed_by_name_between_the_compact_400_and_420_ddl(pg: db.PgServer) -> None:
    from apim_upgrade.postgres.schema_diff import removed_by_name

    removed = {
        o.key()
        for o in removed_by_name(
            reference_catalog(pg, COMPACT / "4.0.0" / APIM_DDL), reference_catalog(pg, COMPACT / "4.2.0" / APIM_DDL)
        )
    }
    # WSO2 renames am_key_manager.tenant_domain to organization and replaces its UNIQUE constraint.
    assert {
        "column:am_key_manager.tenant_domain",
        "index:am_key_manager.am_key_manager_name_tenant_domain_key",
    } <= removed
    assert "constraint:am_key_manager.am_key_manager_name_tenant_domain_key" in removed
    assert not any(k.startswith(("column:am_api.", "table:")) for k in removed)


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("column:am_api.x_custom", True),
        ("table:x_api_audit", True),
        ("sequence:x_seq", True),
        ("index:am_api.x_idx", True),
        ("column_extra:am_api.x_custom", False),
        ("column:x_custom", False),
        ("table:a.b", False),
    ],
)
def test_plan_key_is_an_object_key(tmp_path: Path, key: str, ok: bool) -> None:
    from apim_upgrade.errors import PlanError

    section = {
        "scripts": [{"from_version": "4.2.0", "to_version": "4.3.0", "path": "a.sql"}],
        "target_dbscripts": "dbscripts/4.4.0",
        "accepted_customisations": [key],
    }
    plan = {
        "name": "p",
        "work_dir": str(tmp_path / "work"),
        "databases": {
            "apim": {"source": "a", "target": "a_copy", "owner": "o"},
            "shared": {"source": "s", "target": "s_copy", "owner": "o"},
        },
        "schema_upgrade": section,
    }
    path = tmp_path / "plan.toml"
    path.write_text(tomli_w.dumps(plan))
    if ok:
        assert load_plan(path).section("schema_upgrade").accepted_customisations == [key]
        assert SchemaObject.parse_key(key).key() == key
    else:
        with pytest.raises(PlanError, match="not object keys"):
            load_plan(path)


# --------------------------------------------------------------------------- end to end


@pytest.mark.usefixtures("prefect_api")
def test_customised_estate_is_reported_and_carried_through_the_jvm_and_script_phases(
    make_sandbox: Callable[..., Path],
    pg: db.PgServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan_path = make_sandbox(jvm=True)
    for name, value in sandbox_secrets(plan_path.parent).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APIM_STANDIN_SPEED", "20")
    estate = json.loads((plan_path.parent / "estate.json").read_text())
    invalid = ", ".join(f'"{n}:{v}:{p}"' for n, v, p in sorted(estate["invalid_openapi_apis"]))
    plan_path.write_text(
        plan_path.read_text().replace('cleanup = "delete"', f'cleanup = "delete"\naccepted_invalid_apis = [{invalid}]')
    )
    plan = load_plan(plan_path)
    apim = plan.databases.apim
    _customise(pg, apim.source, apim.owner)
    source_state = _custom_state(pg, apim.source)
    assert source_state["filled"] == (min(40, estate["apis"]),) * 2 and source_state["present"] == CUSTOM_OBJECTS

    # plan check names every customisation, one warning line each, and passes.
    assert main(["plan", "check", str(plan_path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[warning] customisation:")]
    assert len(lines) == 4, lines
    for label, line in zip(CUSTOM_OBJECTS, lines, strict=True):
        assert f"{apim.source}: {label} is not in WSO2's 4.0.0 DDL; carried through" in line

    for phase in ("prepare-databases", "migration-environment", "identity-migration", "api-pre-migration"):
        run_phase(phase, plan)
    assert run_phase("api-migration", plan) == "migrated"
    assert _custom_state(pg, apim.target) == source_state  # the stand-in client left them alone
    assert "conforms to 4.4.0" in run_phase("schema-upgrade", plan)
    assert _custom_state(pg, apim.target) == source_state  # column, its data, both indexes, the table

    records = audit.read_records(plan.audit_path)
    source_check = next(r for r in records if r.step == "check_conformance" and r.phase == "prepare-databases")
    assert [c["object"] for c in source_check.details["customisations"]] == CUSTOM_OBJECTS
    assert [c["key"] for c in source_check.details["customisations"]] == [
        o.replace(" ", ":", 1) for o in CUSTOM_OBJECTS
    ]
    final = [r for r in records if r.step == "check_conformance" and r.phase == "schema-upgrade"][-1]
    assert final.outcome == "succeeded"
    assert {(e["object"], e["status"]) for e in final.details["extra_objects"]} == {
        (o, "carried-through customisation") for o in CUSTOM_OBJECTS
    }
    # Every gate that compared a before and an after checked that nothing vanished.
    gated = [r for r in records if r.step in ("validate_copy", "validate_migration", "validate_unchanged")]
    assert {r.step for r in gated} == {"validate_copy", "validate_migration", "validate_unchanged"}
    for r in [*gated, *(r for r in records if r.step == "validate_script")]:
        assert r.outcome == "succeeded"
        assert any(g["evaluated"] and not g["failed"] for g in r.gates)
    api_gate = next(r for r in records if r.step == "validate_migration" and r.phase == "api-migration")
    assert api_gate.details["apim"]["vanished"] == []
    assert "column am_key_manager.tenant_domain" in api_gate.details["apim"]["removed_by_target_ddl"]

    # The report lists every customisation at the top, before the timeline.
    html = build_report(plan.work_dir).read_text()
    top = html[html.index('id="customisations"') : html.index('id="timeline"')]
    assert "Customised source" in top and all(o in top for o in CUSTOM_OBJECTS)


@pytest.mark.usefixtures("prefect_api")
def test_a_step_that_drops_a_customisation_fails_until_the_plan_accepts_it(
    make_sandbox: Callable[..., Path], pg: db.PgServer, tmp_path: Path
) -> None:
    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    _customise(pg, plan.databases.apim.source, plan.databases.apim.owner)
    for role, ddl in (("apim", APIM_DDL), ("shared", Path("postgresql.sql"))):
        pair = plan.databases.roles()[role]  # a 4.2.0 copy as the JVM phases leave it, customisations kept
        copy_at_version(
            pg, pair.source, pair.target, pair.owner, COMPACT / "4.2.0" / ddl, known=COMPACT / "4.0.0" / ddl
        )
    script = generate_upgrade_script(
        pg, COMPACT / "4.2.0" / APIM_DDL, COMPACT / "4.3.0" / APIM_DDL, tmp_path / "gen.sql", title="4.2.0 -> 4.3.0"
    )
    dropping = tmp_path / "drops-4.2.0-to-4.3.0.sql"
    dropping.write_text(script.read_text() + "\nALTER TABLE am_api DROP COLUMN x_custom;\n")
    last = generate_upgrade_script(
        pg, COMPACT / "4.3.0" / APIM_DDL, COMPACT / "4.4.0" / APIM_DDL, tmp_path / "last.sql", title="4.3.0 -> 4.4.0"
    )
    section = {
        "schema_upgrade": {
            "scripts": [
                {
                    "from_version": "4.2.0",
                    "to_version": "4.3.0",
                    "path": str(dropping),
                    "dbscripts": str(COMPACT / "4.3.0"),
                },
                {
                    "from_version": "4.3.0",
                    "to_version": "4.4.0",
                    "path": str(last),
                    "dbscripts": str(COMPACT / "4.4.0"),
                },
            ],
            "target_dbscripts": str(COMPACT / "4.4.0"),
            "source_dbscripts": str(COMPACT / "4.0.0"),
        }
    }
    plan_path.write_text(plan_path.read_text() + "\n" + tomli_w.dumps(section))
    plan = load_plan(plan_path)
    for _ in range(2):  # a rerun skips the applied script and judges it against the same "before"
        with pytest.raises(GateFailed) as err:
            run_phase("schema-upgrade", plan)
        text = str(err.value)
        assert "column am_api.x_custom" in text
        assert f"{plan.databases.apim.target}: column am_api.x_custom existed before this step and is gone" in text
        assert '[schema_upgrade] accepted_customisations = ["column:am_api.x_custom"]' in text
        assert "index am_api.x_am_api_lower_name" not in text  # only what is gone is named
    record = [r for r in audit.read_records(plan.audit_path) if r.step == "validate_script"][-1]
    assert record.outcome == "failed" and record.details["vanished"] == ["column am_api.x_custom"]

    # The operator accepts losing that customisation: the same applied script now passes its gate.
    plan_path.write_text(
        plan_path.read_text().replace(
            "target_dbscripts = ", 'accepted_customisations = ["column:am_api.x_custom"]\ntarget_dbscripts = '
        )
    )
    plan = load_plan(plan_path)
    assert "conforms to 4.4.0" in run_phase("schema-upgrade", plan)
    records = audit.read_records(plan.audit_path)
    gate = [r for r in records if r.step == "validate_script"]
    assert gate[-2].outcome == "succeeded" and gate[-2].details["accepted"] == ["column am_api.x_custom"]
    final = [r for r in records if r.step == "check_conformance"][-1]
    assert {e["object"] for e in final.details["extra_objects"]} == set(CUSTOM_OBJECTS) - {"column am_api.x_custom"}
