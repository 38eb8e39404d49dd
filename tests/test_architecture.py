"""The house plan holds: every phase declared once and matching its flow; imports run one way."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from apim_upgrade import phases
from apim_upgrade.errors import PlanError
from apim_upgrade.plan import Plan
from flows.phases import flow_of

ROOT = Path(__file__).resolve().parents[1]

# Lower ranks never import higher ones (see ARCHITECTURE.md). Within one rank, only
# modules of the same package import each other.
RANKS: list[tuple[str, ...]] = [
    ("apim_upgrade.errors", "apim_upgrade.redact", "apim_upgrade.phases"),
    ("apim_upgrade.runtime",),
    ("apim_upgrade.postgres.address",),
    ("apim_upgrade.plan",),
    ("apim_upgrade.postgres",),
    ("apim_upgrade.wso2",),
    ("apim_upgrade.proof",),
    ("apim_upgrade.preflight", "apim_upgrade.rehearsal", "apim_upgrade.estate_lock", "apim_upgrade.window"),
    ("expectations",),
    ("tasks",),
    ("flows",),
    ("sandbox",),
    ("commands",),
]
PRODUCT = ("apim_upgrade", "expectations", "tasks", "flows", "commands")


def _rank(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching prefix, rank): the longest prefix wins
    for rank, prefixes in enumerate(RANKS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), rank)
    return None if best is None else best[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every project module ``path`` imports (TYPE_CHECKING-only imports excluded), with its line."""
    tree = ast.parse(path.read_text(), str(path))
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded |= {id(n) for n in ast.walk(node)}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if _rank(name) is not None]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> list[Path]:
    folders = ["apim_upgrade", "expectations", "tasks", "flows", "commands", "sandbox"]
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_imports_never_run_upward() -> None:
    upward: list[str] = []
    for path in _sources():
        module = _module_name(path)
        own = _rank(module)
        if module == "apim_upgrade":
            continue  # the empty package file
        assert own is not None, f"{module} has no place in RANKS: add it (and to ARCHITECTURE.md)"
        for line, name in _imports(path):
            other = _rank(name)
            if other is not None and other > own:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_product_never_imports_the_harness() -> None:
    leaks = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _sources()
        if _module_name(path).startswith(PRODUCT) and not _module_name(path).startswith("commands")
        for line, name in _imports(path)
        if name.startswith(("sandbox", "tests"))
    ]
    assert not leaks, "\n".join(leaks)


def test_the_layer_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from flows.phases import run_phase\nfrom sandbox.create import create_sandbox\n")
    names = [name for _, name in _imports(bad)]
    assert _rank("apim_upgrade.postgres.db") is not None
    assert max(_rank(n) or 0 for n in names) > (_rank("apim_upgrade.postgres.db") or 0)


# --- the phase registry ---------------------------------------------------------


def _calls(function: object) -> set[str]:
    """Names a flow calls or passes on, following the flows/ helpers it delegates to."""
    source = inspect.getsource(inspect.unwrap(function))  # type: ignore[arg-type]
    tree = ast.parse(source.lstrip())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    module = importlib.import_module(inspect.unwrap(function).__module__)  # type: ignore[arg-type]
    for name in list(names):
        helper = getattr(module, name, None)
        if inspect.isfunction(helper) and helper.__module__.startswith("flows."):
            names |= _calls(helper)
    return names


@pytest.mark.parametrize("phase", phases.PHASES, ids=lambda p: p.name)
def test_every_phase_has_its_flow_and_the_declared_facts_hold(phase: phases.Phase) -> None:
    flow = flow_of(phase.name)
    assert flow.name == phase.name, f"{phase.flow} is named {flow.name!r}"
    calls = _calls(flow.fn)
    # Records completion <=> the flow marks it (and checks it first, so a rerun skips it).
    assert ("mark_phase_done" in calls) == phase.records_completion
    assert ("check_phase_done" in calls) == phase.records_completion
    jvm_runs = {"run_identity_migration", "run_api_migration", "run_pre_migration_validation"}
    assert bool(calls & jvm_runs) == phase.starts_jvm
    parameters = set(inspect.signature(flow.fn).parameters) - {"plan_path"}
    assert parameters == {str(o) for o in phase.options}, "the flow's parameters are the phase's options"


def test_registry_order_names_and_sections() -> None:
    assert [p.order for p in phases.PHASES] == list(range(1, len(phases.PHASES) + 1))
    assert len(set(phases.NAMES)) == len(phases.NAMES)
    fields = set(Plan.model_fields)
    for phase in phases.PHASES:
        assert phase.section is None or phase.section in fields, f"{phase.name}: no plan section {phase.section}"
    with pytest.raises(PlanError, match="unknown phase 'nope'; choose one of: prepare-databases"):
        phases.get("nope")
    assert phases.select("cleanup", "configure-440") == ["cleanup", "schema-upgrade", "configure-440"]
    with pytest.raises(PlanError, match="swap them"):
        phases.select("cutover", "cleanup")
