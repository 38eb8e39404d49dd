"""Runs one phase's flow, as the registry (apim_upgrade.phases) declares it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from apim_upgrade import phases, window
from apim_upgrade.errors import ApimUpgradeError, WindowFailed
from apim_upgrade.phases import PhaseOption
from apim_upgrade.plan import Plan


def flow_of(name: str) -> Callable[..., Any]:
    """The Prefect flow of phase ``name`` (imported on demand: a phase run imports only its own)."""
    phase = phases.get(name)
    flow: Callable[..., Any] = getattr(importlib.import_module(phase.flow_module), phase.flow_function)
    return flow


def run_phase(name: str, plan: Plan, *, terminate_connections: bool = False, rebaseline: bool = False) -> Any:
    """Run one phase flow (locally: Prefect's embedded API unless PREFECT_API_URL is set)."""
    phases.check_runnable(plan, name)
    given = {PhaseOption.TERMINATE_CONNECTIONS: terminate_connections, PhaseOption.REBASELINE: rebaseline}
    options = {str(option): given[option] for option in phases.get(name).options}
    return flow_of(name)(plan_path=str(plan.source_path), **options)


def run_phase_in_window(name: str, plan: Plan, **options: bool) -> Any:
    """run_phase; once the cutover window is open, a failure ends with how to get back (one line)."""
    try:
        return run_phase(name, plan, **options)
    except WindowFailed:
        raise
    except ApimUpgradeError as exc:
        if window.read_state(plan) is None:  # not open (or rejected): nothing was stopped
            raise
        raise WindowFailed.wrapping(exc, window.rollback_hint(plan)) from exc
