"""Phase 8, configure-440: the 4.4.0 home gets the estate's customisations and configuration."""

from __future__ import annotations

from prefect import flow

from apim_upgrade.phases import CONFIGURE_440
from apim_upgrade.plan import load_plan
from tasks.configure import carry_over_customisations, render_deployment_toml_440

PHASE = CONFIGURE_440.name


@flow(name=PHASE)
def configure_440(plan_path: str) -> str:
    """Carry customisations over, then render deployment.toml (rerunnable: renders from the pack default)."""
    plan = load_plan(plan_path)
    results = carry_over_customisations(plan)
    rendered = render_deployment_toml_440(plan)
    copied = sum(1 for r in results if r["outcome"] == "copied")
    return f"{copied} file(s) carried over; re_indexing = {rendered['indexing']['re_indexing']}"
