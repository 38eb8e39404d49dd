"""Shared fixtures: a real PostgreSQL, a real Prefect API, unique sandbox estates."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

# Before anything imports Prefect or GX: private, quiet settings.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="apim-upgrade-prefect-")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# Stand-in servers hold 3 pooled connections per datasource instead of WSO2's 10, so estates
# running side by side on two workers stay under PostgreSQL's 100 connections (test_cutover
# checks the real default).
os.environ.setdefault("APIM_STANDIN_POOL_INITIAL_SIZE", "3")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Reference catalogues are cached across runs; tests start cold and never touch ~/.cache.
os.environ["APIM_UPGRADE_CACHE_DIR"] = tempfile.mkdtemp(prefix="apim-upgrade-cache-")

import pytest

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.postgres import db
from sandbox.pgserver import ServerHandle, find_server


def _shared_wso2() -> Path:
    """WSO2's reference files: APIM_UPGRADE_SHARED_WSO2, beside the checkout, or /work/shared."""
    candidates = [Path(os.environ["APIM_UPGRADE_SHARED_WSO2"])] if "APIM_UPGRADE_SHARED_WSO2" in os.environ else []
    candidates += [Path(__file__).resolve().parents[2] / "shared" / "wso2", Path("/work/shared/wso2")]
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED_WSO2 = _shared_wso2()
DBSCRIPTS_400 = SHARED_WSO2 / "dbscripts" / "4.0.0"


@pytest.fixture(scope="session")
def pg_handle() -> Iterator[ServerHandle]:
    try:
        handle = find_server()
    except ApimUpgradeError as exc:
        pytest.exit(f"no PostgreSQL for the tests: {exc}", returncode=3)
    yield handle
    handle.stop()


# Scheduling on pytest-xdist workers (`--dist loadfile` in pyproject.toml): a module runs on one
# worker, so its module-scoped fixtures (the crash chains' three rehearsed estates above all) are
# built once, not once per worker; and the longest modules are handed out first, so no worker is
# left alone with one of them at the end of the run.
LONGEST_FIRST = (
    "test_rehearsal_proof",
    "test_window",
    "test_disk_full",
    "test_approval_ui",
    "test_jvm_phases",
    "test_cutover",
    "test_bad_inputs",
    "test_deployments",
    "test_customisations",
    "test_exit_codes",
)


def _module_name(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_module_name(item), len(rank)))


@pytest.fixture(scope="session")
def pg(pg_handle: ServerHandle) -> db.PgServer:
    return pg_handle.server


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def genuine_dbscripts() -> Path:
    if not (DBSCRIPTS_400 / "apimgt" / "postgresql.sql").exists():
        pytest.skip(f"genuine WSO2 4.0.0 DDL not found at {DBSCRIPTS_400}")
    return DBSCRIPTS_400


def unique(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_sandbox(pg: db.PgServer, tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Factory: build a sandbox estate and its plan; everything is dropped afterwards."""
    from apim_upgrade.plan import load_plan
    from sandbox.create import create_sandbox, rehearsal_copies
    from sandbox.estate import drop_estate
    from sandbox.roles import drop_node_role

    names: list[str] = []
    targets: list[str] = []
    roles: list[str] = []

    def factory(scale: int = 1, dbscripts: Path | None = None, subdir: str = "sb", jvm: bool = False) -> Path:
        plan_path, _ = create_sandbox(
            tmp_path / subdir,
            pg,
            scale=scale,
            dbscripts=dbscripts,
            prefix=unique("apim_t"),
            with_distribution=jvm,
        )
        # Remember the names now: tests may rewrite the plan file.
        plan = load_plan(plan_path)
        for pair in plan.databases.roles().values():
            names.extend([pair.source, pair.target])
            targets.append(pair.target)
        if plan.migration_environment is not None:
            roles.append(plan.migration_environment.db_username)
        return plan_path

    yield factory
    from sandbox.nodes import stop_everything

    stop_everything(tmp_path)  # any stand-in node a test started
    drop_estate(pg, *names, *rehearsal_copies(pg, targets))
    for role in roles:  # the nodes' own login role (made by the sandbox, dropped once its databases are)
        drop_node_role(pg, role)


@pytest.fixture
def jvm_sandbox(make_sandbox: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 4.0.0 sandbox with its stand-in packs and nodes, copies made, its secrets exported."""
    from apim_upgrade.plan import load_plan
    from flows.phases import run_phase
    from sandbox.create import sandbox_secrets

    plan_path = make_sandbox(jvm=True)
    for name, value in sandbox_secrets(plan_path.parent).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APIM_STANDIN_SPEED", "20")
    run_phase("prepare-databases", load_plan(plan_path))
    return plan_path
