"""Rehearsal mode: the same flows on dated, suffixed copies that never touch real nodes.

A rehearsal plan is derived from the cutover plan and written next to its own work
directory: targets get a ``_rehearsal_<date>`` suffix, the 4.4.0 home is a copy,
the cutover is unattended and uses ``[cutover.rehearsal]`` nodes (or is skipped).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from apim_upgrade.errors import ApimUpgradeError, PlanError
from apim_upgrade.plan import Plan, load_plan, replace_in_strings
from apim_upgrade.postgres import bookkeeping, db, queries
from apim_upgrade.runtime.atomic import copy_tree_atomically, write_atomically
from apim_upgrade.wso2 import node_identity

_REHEARSAL_NAME = re.compile(r"_rehearsal_\d{8}$")


def rehearsal_suffix(day: datetime | None = None) -> str:
    return "_rehearsal_" + (day or datetime.now(UTC)).strftime("%Y%m%d")


def is_rehearsal_plan(plan: Plan) -> bool:
    """A plan derived by ``derive_rehearsal_plan`` (its estate name carries the dated suffix)."""
    return bool(_REHEARSAL_NAME.search(plan.name))


def refuse_if_cut_over(plan: Plan) -> None:
    """A rehearsal of an estate whose own API-M target records the cutover done proves nothing: refuse it."""
    target = plan.databases.apim.target
    with db.session(plan.server(), plan.postgres.maintenance_db, read_only=True) as conn:
        exists = db.fetch_one(conn, queries.DATABASE_INFO, ([target],)) is not None
    if not exists:
        return
    if any(
        phase == "cutover" and step == "done"
        for phase, step in bookkeeping.state(plan.server(), target).completed_steps
    ):
        raise ApimUpgradeError(
            f"estate '{plan.name}' is already cut over to 4.4.0 ({target} records the cutover done): a rehearsal "
            "of it proves nothing; pause its rehearsal schedule (`prefect deployment schedule pause`) or, after a "
            "rollback, rehearse again"
        )


def nothing_to_roll_back(plan: Plan) -> str | None:
    """Before a rollback touches any node: a rehearsal whose copies are dropped has nothing of its own to undo.

    Returns the one line saying so, or None when the rollback has work to do (not a rehearsal
    plan, or a copy of the rehearsal still exists). A rehearsal whose copies are dropped while
    one of its 4.4.0 nodes still answers is refused here, before anything is stopped or started.
    """
    if not is_rehearsal_plan(plan) or plan.cutover is None:
        return None
    targets = [pair.target for pair in plan.databases.roles().values()]
    with db.session(plan.server(), plan.postgres.maintenance_db, read_only=True) as conn:
        if db.fetch_all(conn, queries.DATABASE_INFO, (targets,)):
            return None  # the rehearsal's copies are there: its cutover may have switched its nodes
    section = plan.cutover
    own_440 = [(n, section.control_plane_400) for n in section.control_plane_440]
    own_440 += [(n, [n.replaces] if n.replaces else []) for g in section.gateway_groups for n in g.nodes]
    for node, predecessors in own_440:
        found = node_identity.identify(node)
        if found.answering and not any(node_identity.same_node(found, p) for p in predecessors):
            raise ApimUpgradeError(
                f"rehearsal '{plan.name}': its copies {', '.join(targets)} are dropped, yet {node.health_url} of "
                f"its node '{node.name}' is answered by {found.server()}; rollback did nothing: stop that "
                f"server ({' '.join(node.stop)}), nothing else of the rehearsal is left to roll back"
            )
    return (
        f"nothing to roll back: rehearsal '{plan.name}' has dropped its copies ({', '.join(targets)}) and none of "
        "its 4.4.0 nodes is running; no node was stopped or started"
    )


def derive_rehearsal_plan(plan: Plan, day: datetime | None = None) -> Path:
    """Write (or rewrite) the rehearsal plan for ``day`` and return its path."""
    suffix = rehearsal_suffix(day)
    base = plan.work_dir / suffix.lstrip("_")
    doc: dict[str, Any] = plan.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["name"] = f"{plan.name}{suffix}"
    doc["work_dir"] = str(base / "work")
    for role in ("apim", "shared"):
        target = doc["databases"][role]["target"]
        name = f"{target}{suffix}"
        if len(name.encode()) > 63:
            raise PlanError(
                f"rehearsal copy name '{name}' exceeds PostgreSQL's 63 bytes; shorten databases.{role}.target"
            )
        doc["databases"][role]["target"] = name
    home_swap: tuple[str, str] | None = None
    if plan.target_440 is not None:
        home = base / "home-440" / plan.target_440.home.name
        if not home.exists() and plan.target_440.home.exists():
            copy_tree_atomically(plan.target_440.home, home)  # never edit the real 4.4.0 home; never half a copy
        doc["target_440"]["home"] = str(home)
        home_swap = (str(plan.target_440.home), str(home))
    cutover = doc.get("cutover")
    if cutover is not None:
        rehearsal_nodes = cutover.pop("rehearsal", None)
        if rehearsal_nodes is None:
            doc.pop("cutover")  # real nodes are never touched in a rehearsal
        else:
            if home_swap is not None:  # rehearsal nodes run the rehearsal's own copy of the 4.4.0 home
                rehearsal_nodes = replace_in_strings(rehearsal_nodes, *home_swap)
            offset = rehearsal_nodes.pop("server_offset", None)
            if offset is not None and "target_440" in doc:
                doc["target_440"]["server_offset"] = offset
            # Production keeps serving (and writing) while it is rehearsed: its sources drift from the
            # rehearsal's copies by design, and nothing is lost, so drift never stops a rehearsal.
            cutover.update(rehearsal_nodes, unattended=True, accept_drift=True)
    base.mkdir(parents=True, exist_ok=True)
    path = base / "plan.toml"
    write_atomically(
        path,
        f"# Rehearsal plan derived from {plan.source_path} (sha256 {plan.digest}); regenerated each run.\n"
        + tomli_w.dumps(doc),
    )
    load_plan(path)  # it must be a valid plan itself
    return path
