"""The end-to-end flow: every phase as a subflow, in order, for a rehearsal or the real cutover."""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger

from apim_upgrade import phases as registry
from apim_upgrade.errors import failures_logged_once
from apim_upgrade.estate_lock import estate_lock
from apim_upgrade.plan import load_plan
from apim_upgrade.preflight import check_phase_inputs
from apim_upgrade.rehearsal import refuse_if_cut_over
from flows.phases import run_phase, run_phase_in_window
from tasks.jvm import check_phase_done
from tasks.rehearsal import drop_rehearsal_copies, prepare_rehearsal_plan, stop_rehearsal_nodes
from tasks.report import publish_report, report_after_failure


@flow(name="upgrade-apim")
def upgrade_apim(
    plan: str,
    mode: Literal["rehearsal", "cutover"] = "rehearsal",
    from_phase: str | None = None,
    until_phase: str | None = None,
    resume: bool = True,
    keep_copies: bool = False,
) -> dict[str, str]:
    """Run the phases from ``from_phase`` to ``until_phase``.

    Every phase resumes by itself (it skips what its history says is done on the current
    copy), so rerunning after a failure or crash continues at the first incomplete step.
    ``resume=False`` (rehearsals only) starts from fresh copies.

    A cutover runs what needs no frozen data first, then the window (approval, 4.0.0 stopped,
    sources fenced, its sessions gone), then the copies, migrations and the switch; a failure
    inside the window says how to get back. A rehearsal copies online, in registry order.
    """
    logger = get_run_logger()
    # A deployment run's log is where its failure is read: one FAILED line, as the CLI prints it.
    with failures_logged_once(logger):
        estate = load_plan(plan)
        phases = registry.select(from_phase, until_phase)
        if mode == "cutover":
            phases = registry.cutover_order(phases)
        # Packs, keystores, scripts and secrets of the phases the plan can run: before anything is written.
        check_phase_inputs(estate, phases)
        if mode == "rehearsal":
            refuse_if_cut_over(estate)  # its weekly schedule may still fire after the cutover
        # One run per estate at a time, whatever the mode: a second one is refused, naming the first.
        with estate_lock(estate, mode) as lock:
            the_plan = load_plan(prepare_rehearsal_plan(estate, fresh=not resume)) if mode == "rehearsal" else estate
            results: dict[str, str] = {}
            try:
                for name in phases:
                    lock.ensure()  # a server restart during the previous phase released it
                    if name == registry.WINDOW.name and mode != "cutover":
                        results[name] = "skipped (a rehearsal copies online: 4.0.0 keeps serving)"
                        continue
                    section = registry.missing_section(the_plan, name)
                    if section is not None:
                        logger.warning("phase %s skipped: the %s plan has no [%s] section", name, mode, section)
                        results[name] = f"skipped (no [{section}])"
                        continue
                    if registry.get(name).records_completion and check_phase_done(the_plan, name):
                        results[name] = "skipped (already done on this copy)"  # no subflow: resumes start fast
                        continue
                    run = run_phase_in_window if mode == "cutover" else run_phase
                    results[name] = str(run(name, the_plan))
                    if name == registry.WINDOW.name and results[name].startswith("rejected"):
                        logger.warning("cutover %s: nothing stopped, nothing copied", results[name])
                        break
                if mode == "rehearsal" and not keep_copies and phases[-1] == registry.NAMES[-1]:
                    # Nothing of the rehearsal's may keep serving from copies about to be dropped.
                    results["rehearsal-nodes"] = "stopped " + (", ".join(stop_rehearsal_nodes(the_plan)) or "none")
                    results["rehearsal-copies"] = drop_rehearsal_copies(the_plan)
            except Exception:
                # A stopped run is when the report matters most: write it (its failure first), then fail.
                report_after_failure(the_plan)
                raise
            results["report"] = publish_report(the_plan)
        return results
