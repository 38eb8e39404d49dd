"""Tasks of the configure-440 phase: carry customisations over, render deployment.toml."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from apim_upgrade.errors import ApimUpgradeError
from apim_upgrade.phases import CONFIGURE_440
from apim_upgrade.plan import Plan
from apim_upgrade.proof.steps import audited_step
from apim_upgrade.runtime.atomic import copy_atomically
from apim_upgrade.wso2 import config_440, config_render
from apim_upgrade.wso2.distribution import CONF_FILE
from tasks.retry import retryable_task

PHASE = CONFIGURE_440.name
PACK_DEFAULT = "deployment.toml.pack-default"


@retryable_task("carry_over_customisations")
def carry_over_customisations(plan: Plan) -> list[dict[str, str]]:
    target = plan.section("target_440")
    with audited_step(plan, PHASE, "carry_over_customisations", {"items": target.carry_over}) as rec:
        config_440.check_homes(target)
        results = config_440.carry_over(target.old_home, target.home, target.carry_over, target.conflict_policy)
        rows = [{"path": r.path, "outcome": r.outcome, "detail": r.detail} for r in results]
        rec.details["results"] = rows
        create_table_artifact(
            key="carry-over-440",
            table=rows or [{"path": "(nothing listed)"}],
            description="Customisations carried from 4.0.0 to 4.4.0",
        )
        blocking = [r for r in results if r.outcome == "conflicting" and target.conflict_policy == "fail"]
        missing = [r for r in results if r.outcome == "missing in 4.0.0"]
        if blocking or missing:
            raise ApimUpgradeError(
                "carry-over needs a decision: "
                + "; ".join(f"{r.path}: {r.outcome} ({r.detail})" for r in blocking + missing)
                + ". Merge the file by hand, remove it from target_440.carry_over, or set "
                "target_440.conflict_policy to keep-440 / take-400"
            )
    return rows


@retryable_task("render_deployment_toml_440")
def render_deployment_toml_440(plan: Plan) -> dict[str, Any]:
    """The estate's 4.0.0 settings on 4.4.0's structure; re_indexing raised by one."""
    target = plan.section("target_440")
    conf = target.home / CONF_FILE
    pack_default = conf.with_name(PACK_DEFAULT)
    with audited_step(plan, PHASE, "render_deployment_toml", {"home": str(target.home)}) as rec:
        if not pack_default.exists():  # first run: keep the pack's own file, render from it ever after
            copy_atomically(conf, pack_default)  # never half a file: it is rendered from ever after
        default = config_render.read_toml(pack_default)
        old = config_render.read_toml(target.old_home / CONF_FILE)
        mapped = config_440.map_to_440(old, default, plan)
        available = config_render.placeholders(mapped.document)  # values live on the nodes, not here
        problems = config_render.check_home(target.home, mapped.document, plan, available)
        if problems:
            raise ApimUpgradeError("the 4.4.0 home is not ready:\n" + "\n".join(f"  - {p}" for p in problems))
        config_render.write_toml(mapped.document, conf)
        changes = config_render.semantic_diff(old, mapped.document)
        unknown = config_440.unknown_to_440(old, default)
        rec.details.update(
            file=str(conf),
            changes=len(changes),
            dropped=mapped.dropped,
            unknown_tables=unknown,
            secrets_to_set=mapped.secrets_to_set,
            re_indexing_before=mapped.re_indexing[0],
            re_indexing_after=mapped.re_indexing[1],
        )
        create_markdown_artifact(
            key="deployment-toml-440",
            markdown=_markdown(mapped, changes, unknown),
            description="4.4.0 deployment.toml: changes against the estate's 4.0.0 file",
        )
    logger = get_run_logger()
    for key, why in mapped.dropped.items():
        logger.warning("4.4.0 no longer knows %s: %s (not carried over)", key, why)
    for name in mapped.secrets_to_set:
        logger.warning("literal secret replaced by $env{%s}: set it on the 4.4.0 nodes", name)
    return mapped.document


def _markdown(mapped: config_440.MappingResult, changes: list[config_render.ConfigChange], unknown: list[str]) -> str:
    lines = [f"`[indexing] re_indexing`: {mapped.re_indexing[0]} -> {mapped.re_indexing[1]}", ""]
    if mapped.dropped:
        lines += ["### Keys 4.4.0 no longer knows (not carried over)", ""]
        lines += [f"- `{k}`: {why}" for k, why in mapped.dropped.items()] + [""]
    if unknown:
        lines += ["### Tables not in the 4.4.0 default (kept; verify them)", ""] + [f"- `[{t}]`" for t in unknown]
    if mapped.secrets_to_set:
        lines += ["", "### Literal secrets replaced by placeholders (set these on the nodes)", ""]
        lines += [f"- `{n}`" for n in mapped.secrets_to_set]
    lines += [
        "",
        "### Changes against the estate's 4.0.0 deployment.toml (secrets masked)",
        "",
        "| key | change | 4.0.0 | 4.4.0 |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{c.key}` | {c.change} | `{c.old}` | `{c.new}` |" for c in changes]
    return "\n".join(lines)
