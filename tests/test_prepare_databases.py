"""The prepare-databases phase end to end on a real PostgreSQL and a real Prefect API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from apim_upgrade.errors import GateFailed
from apim_upgrade.plan import load_plan
from apim_upgrade.postgres import copies, db, queries
from apim_upgrade.postgres.catalog import Snapshot, take_snapshot
from apim_upgrade.proof import audit
from flows.prepare_databases import prepare_databases

pytestmark = pytest.mark.usefixtures("prefect_api")


def _comment(pg: db.PgServer, name: str) -> dict[str, object] | None:
    with db.session(pg, "postgres", read_only=True) as conn:
        row = db.fetch_one(conn, queries.DATABASE_INFO, ([name],))
    return copies.read_marker(row[2]) if row else None


def _steps(plan_path: Path) -> list[tuple[str, str, object]]:
    plan = load_plan(plan_path)
    return [(r.step, r.outcome, r.details.get("target")) for r in audit.read_records(plan.audit_path)]


def test_phase_on_genuine_400_ddl(make_sandbox: Callable[..., Path], genuine_dbscripts: Path, pg: db.PgServer) -> None:
    plan_path = make_sandbox(scale=3, dbscripts=genuine_dbscripts)
    plan = load_plan(plan_path)

    assert prepare_databases(plan_path=str(plan_path)) == {
        "apim": "copied and verified",
        "shared": "copied and verified",
    }

    for role, pair in plan.databases.roles().items():
        source = take_snapshot(pg, pair.source)
        copy = take_snapshot(pg, pair.target)
        assert copy.row_counts == source.row_counts, role
        assert source.total_rows > 10_000 or role == "shared"
        assert (_comment(pg, pair.target) or {}).get("state") == "verified"
    shared_copy = take_snapshot(pg, plan.databases.shared.target)
    names = {i.name for i in shared_copy.indexes}
    assert set(queries.REGISTRY_INDEXES) <= names
    source_names = {i.name for i in take_snapshot(pg, plan.databases.shared.source).indexes}
    assert not set(queries.REGISTRY_INDEXES) & source_names, "the source must stay untouched"
    with db.session(pg, plan.databases.apim.target, read_only=True) as conn:
        tables = {r[0] for r in db.fetch_all(conn, queries.TABLES, ("public",))}
    assert "idn_oauth2_access_token" in tables

    steps = _steps(plan_path)
    assert ("validate_copy", "succeeded", plan.databases.shared.target) in steps
    assert audit.verify_chain(plan.audit_path) == []
    # The database copy of the trail matches the file, record for record.
    assert audit.compare_with_database(pg, plan.databases.apim.target, audit.read_records(plan.audit_path)) == []
    docs = plan.work_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    assert docs.exists()

    # A rerun after success skips what is done and verified.
    assert prepare_databases(plan_path=str(plan_path)) == {
        "apim": "skipped (verified)",
        "shared": "skipped (verified)",
    }
    assert [s for s in _steps(plan_path) if s[1] == "skipped"] == [
        ("copy_database", "skipped", plan.databases.apim.target),
        ("copy_database", "skipped", plan.databases.shared.target),
    ]


def test_artifact_table_and_gate_failure_on_deleted_row(make_sandbox: Callable[..., Path], pg: db.PgServer) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tasks.gates import validate_copy

    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    prepare_databases(plan_path=str(plan_path))

    async def latest_table() -> list[dict[str, object]]:
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["copy-gate-apim"]))
            )
        return json.loads(arts[-1].data) if isinstance(arts[-1].data, str) else arts[-1].data

    import asyncio

    rows = asyncio.run(latest_table())
    assert {"table", "source_rows", "copy_rows", "status"} <= set(rows[0])
    assert all(r["status"] == "ok" for r in rows)

    with db.session(pg, plan.databases.apim.target) as conn:
        db.execute(
            conn,
            "DELETE FROM am_subscription WHERE subscription_id = (SELECT min(subscription_id) FROM am_subscription)",
        )
    source = Snapshot.load(plan.work_dir / "snapshots" / "apim-source.json")
    with pytest.raises(GateFailed) as err:
        validate_copy(plan, "apim", source)
    expected = source.row_counts["am_subscription"]
    assert (
        f"row count differs from the source snapshot: table_name=am_subscription, "
        f"expected_rows={expected}, actual_rows={expected - 1}"
    ) in str(err.value)
    assert "Data Docs:" in str(err.value)
    # The failed copy is no longer trusted: a rerun rebuilds it.
    assert (_comment(pg, plan.databases.apim.target) or {}).get("state") == "gate-failed"
    assert prepare_databases(plan_path=str(plan_path))["apim"] == "copied and verified"
    assert take_snapshot(pg, plan.databases.apim.target).row_counts["am_subscription"] == expected


def test_half_created_copy_is_rebuilt(make_sandbox: Callable[..., Path], pg: db.PgServer) -> None:
    """A copy killed between CREATE DATABASE and its marker is recognised by the intent record."""
    from datetime import UTC, datetime

    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    pair = plan.databases.apim
    with db.session(pg, "postgres", autocommit=True) as conn:
        db.execute(conn, queries.create_database_from_template(pair.target, pair.source, pair.owner, None))
    with db.session(pg, pair.target) as conn:  # the half-made copy differs from the source
        db.execute(conn, "TRUNCATE am_api CASCADE")
    audit.append_record(
        plan.audit_path,
        plan=plan.name,
        plan_digest=plan.digest,
        phase="prepare-databases",
        step="copy_database",
        started_at=datetime.now(UTC),
        ended_at=None,
        outcome="started",
        details={"role": "apim", "source": pair.source, "target": pair.target},
    )

    assert prepare_databases(plan_path=str(plan_path))["apim"] == "copied and verified"
    rebuilt = [
        r
        for r in audit.read_records(plan.audit_path)
        if r.step == "copy_database" and r.outcome == "succeeded" and r.details.get("rebuilt")
    ]
    assert rebuilt and rebuilt[0].details["target"] == pair.target
    assert take_snapshot(pg, pair.target).row_counts == take_snapshot(pg, pair.source).row_counts


def test_hostile_database_names(make_sandbox: Callable[..., Path], pg: db.PgServer) -> None:
    plan_path = make_sandbox()
    plan = load_plan(plan_path)
    hostile = 'x"; DROP DATABASE postgres; --' + plan.name[-8:]
    plan_path.write_text(
        plan_path.read_text().replace(f'target = "{plan.databases.shared.target}"', f"target = '{hostile}'")
    )
    try:
        assert prepare_databases(plan_path=str(plan_path))["shared"] == "copied and verified"
        with db.session(pg, "postgres", read_only=True) as conn:
            names = {r[0] for r in db.fetch_all(conn, "SELECT datname FROM pg_database")}
        assert hostile in names and "postgres" in names
        assert take_snapshot(pg, hostile).row_counts == take_snapshot(pg, plan.databases.shared.source).row_counts
    finally:
        with db.session(pg, "postgres", autocommit=True) as conn:
            db.execute(conn, queries.drop_database(hostile))
