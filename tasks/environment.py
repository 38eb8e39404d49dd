"""Tasks of the migration-environment phase: the disposable 4.2.0 home."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from apim_upgrade.errors import ApimUpgradeError, PlanError
from apim_upgrade.phases import CLEANUP, MIGRATION_ENVIRONMENT
from apim_upgrade.plan import Plan
from apim_upgrade.plan.sections import MigrationEnvironmentSection
from apim_upgrade.postgres import copies, history
from apim_upgrade.proof.steps import audited_step
from apim_upgrade.runtime.atomic import copy_atomically
from apim_upgrade.wso2 import config_render, distribution
from apim_upgrade.wso2.jvm import stop_leftover_server
from tasks.retry import retryable_task

PHASE = MIGRATION_ENVIRONMENT.name
MIGRATION_VERSION = "4.2.0"


def env_root(plan: Plan) -> Path:
    return plan.work_dir / "migration-env"


def find_home(plan: Plan) -> Path:
    """The unpacked 4.2.0 home of this plan (made by the migration-environment phase)."""
    homes = sorted(p.parent.parent for p in env_root(plan).glob("*/bin/api-manager.sh"))
    if len(homes) != 1:
        raise ApimUpgradeError(f"no prepared 4.2.0 home under {env_root(plan)}; run phase migration-environment first")
    return homes[0]


def jvm_secrets(me: MigrationEnvironmentSection) -> dict[str, str]:
    """Values of the variables deployment.toml refers to; only ever passed to the JVM's environment."""
    missing = [n for n in me.secret_variables() if n not in os.environ]
    if missing:
        raise PlanError(
            f"environment variable(s) {', '.join(missing)} (named in [migration_environment]) are not "
            "set; export them before running the JVM phases"
        )
    return {n: os.environ[n] for n in me.secret_variables()}


@retryable_task("check_copies_verified")
def check_copies_verified(plan: Plan) -> None:
    """The 4.2.0 steps only ever run on verified copies."""
    server = plan.server()
    for role, pair in plan.databases.roles().items():
        state = copies.target_state(server, plan.postgres.maintenance_db, plan, pair.source, pair.target, False)
        if state is not copies.CopyState.VERIFIED:
            raise ApimUpgradeError(
                f"the {role} copy '{pair.target}' is {state.value}, not verified; run phase prepare-databases first"
            )


@retryable_task("check_environment_discarded")
def check_environment_discarded(plan: Plan) -> bool:
    """True when cleanup already discarded this copy's 4.2.0 home: a rerun must not make it again."""
    pair = plan.databases.apim
    state = copies.target_state(plan.server(), plan.postgres.maintenance_db, plan, pair.source, pair.target, False)
    if state is not copies.CopyState.VERIFIED:  # no copy yet (a cutover before its window): nothing discarded
        return False
    done = history.completed(plan.server(), plan.databases.apim.target, CLEANUP.name, "done")
    if done is None:
        return False
    with audited_step(plan, PHASE, "check_phase_done", {"phase": CLEANUP.name}) as rec:
        rec.outcome = "skipped"
        rec.details.update(completed_at=done[0].isoformat(), reason="the 4.2.0 home was already discarded by cleanup")
    get_run_logger().info("cleanup already discarded the 4.2.0 home of this copy: not unpacking it again")
    return True


@retryable_task("unpack_distribution")
def unpack_distribution(plan: Plan) -> str:
    me = plan.section("migration_environment")
    with audited_step(plan, PHASE, "unpack_distribution", {"zip": str(me.distribution_zip)}) as rec:
        info = distribution.inspect_pack(me.distribution_zip, MIGRATION_VERSION)
        # The unpack replaces an earlier home: a server a crashed run left running there would
        # lose its pid file and keep working on the copies unseen. Stop it first.
        for old in sorted(p.parent.parent for p in env_root(plan).glob("*/bin/api-manager.sh")):
            stopped = stop_leftover_server(old)
            if stopped is not None:
                rec.details.setdefault("stopped_leftover_servers", []).append(stopped)
                get_run_logger().warning("stopped a server of %s left running by an earlier run", old)
        home = distribution.unpack(info, env_root(plan))
        rec.details.update(
            zip=str(info.path),
            sha256=info.sha256,
            product_version=info.product_version,
            carbon_apimgt=info.apimgt_version,
            home=str(home),
        )
    get_run_logger().info("unpacked %s (sha256 %s) to %s", info.path.name, info.sha256, home)
    return str(home)


@retryable_task("render_deployment_toml")
def render_deployment_toml(plan: Plan, home: str) -> dict[str, Any]:
    conf = Path(home) / distribution.CONF_FILE
    with audited_step(plan, PHASE, "render_deployment_toml", {"home": home}) as rec:
        default = config_render.read_toml(conf)
        rendered = config_render.render_migration_toml(default, plan)
        copy_atomically(conf, conf.parent / "deployment.toml.pack-default")
        config_render.write_toml(rendered, conf)
        changes = config_render.semantic_diff(default, rendered)
        rec.details.update(file=str(conf), changes=len(changes))
        create_markdown_artifact(
            key="migration-deployment-toml",
            markdown=_toml_markdown(rendered, changes),
            description="deployment.toml of the 4.2.0 migration environment (secrets masked)",
        )
    return rendered


@retryable_task("install_jdbc_driver")
def install_jdbc_driver(plan: Plan, home: str) -> str:
    me = plan.section("migration_environment")
    with audited_step(plan, PHASE, "install_jdbc_driver", {"driver": str(me.jdbc_driver)}) as rec:
        dest = distribution.install_jdbc_driver(Path(home), me.jdbc_driver)
        rec.details.update(driver=me.jdbc_driver.name, sha256=distribution.sha256_file(dest))
    return str(dest)


@retryable_task("install_keystores")
def install_keystores(plan: Plan, home: str) -> list[str]:
    me = plan.section("migration_environment")
    with audited_step(plan, PHASE, "install_keystores", {"keystores": [str(k) for k in me.keystores]}) as rec:
        removed, copied = distribution.replace_keystores(Path(home), me.keystores)
        rec.details.update(removed=removed, copied=copied)
    return copied


@retryable_task("check_migration_home")
def check_migration_home(plan: Plan, home: str, rendered: dict[str, Any]) -> None:
    """Catch, before any JVM starts, what would make it fail or touch the wrong database."""
    me = plan.section("migration_environment")
    with audited_step(plan, PHASE, "check_migration_home", {"home": home}) as rec:
        available = {n for n in me.secret_variables() if n in os.environ}
        problems = config_render.check_home(Path(home), rendered, plan, available)
        rec.details["problems"] = problems
        if problems:
            raise ApimUpgradeError("the 4.2.0 migration home is not ready:\n" + "\n".join(f"  - {p}" for p in problems))


def _toml_markdown(rendered: dict[str, Any], changes: list[config_render.ConfigChange]) -> str:
    lines = [
        "### Changes against the pack default",
        "",
        "| key | change | pack default | rendered |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{c.key}` | {c.change} | `{c.old}` | `{c.new}` |" for c in changes]
    lines += [
        "",
        "### Rendered deployment.toml (secrets masked)",
        "",
        "```toml",
        config_render.masked_toml(rendered),
        "```",
    ]
    return "\n".join(lines)
