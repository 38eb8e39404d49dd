"""Phase 2, migration-environment: the disposable, patched WSO2 API-M 4.2.0 home."""

from __future__ import annotations

from prefect import flow

from apim_upgrade.phases import MIGRATION_ENVIRONMENT
from apim_upgrade.plan import load_plan
from tasks.environment import (
    check_environment_discarded,
    check_migration_home,
    install_jdbc_driver,
    install_keystores,
    render_deployment_toml,
    unpack_distribution,
)


@flow(name=MIGRATION_ENVIRONMENT.name)
def migration_environment(plan_path: str) -> str:
    """Unpack the pack, render deployment.toml, add the driver and keystores, check it all.

    Needs no copy (a cutover prepares it before the window opens); the JVM phases check the copies.
    """
    plan = load_plan(plan_path)
    if check_environment_discarded(plan):
        return "skipped (the 4.2.0 home was already discarded by cleanup)"
    home = unpack_distribution(plan)
    rendered = render_deployment_toml(plan, home)
    install_jdbc_driver(plan, home)
    install_keystores(plan, home)
    check_migration_home(plan, home, rendered)
    return home
