"""Runs Great Expectations gates against PostgreSQL through a SQL datasource.

A gate is a few query assets (small result sets computed inside the
database: counts, catalogue rows) and the expectations on each. Nothing is
loaded into pandas; GX evaluates the expectations as SQL. Results go to
GX's Data Docs in the work directory, rendered once per phase (build_pending_data_docs)
and made to render offline (data_docs_offline).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apim_upgrade.postgres import db
from apim_upgrade.proof import data_docs_offline
from apim_upgrade.runtime.atomic import write_atomically

# GX reads the password from the environment at run time (`${VAR}` in the
# connection string), so it is never written into GX's project files.
PASSWORD_VARIABLE = "APIM_UPGRADE_GX_PG_PASSWORD"


@dataclass(frozen=True)
class Expectation:
    """One expectation: a GX class name, its arguments and a human label."""

    label: str
    kind: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class QueryAsset:
    name: str
    query: str
    expectations: list[Expectation]
    key_column: str | None = None  # names the failing rows in messages


@dataclass(frozen=True)
class GateSpec:
    name: str
    database: str
    assets: list[QueryAsset]


@dataclass
class ExpectationOutcome:
    asset: str
    label: str
    success: bool
    detail: str


@dataclass
class GateResult:
    name: str
    database: str
    success: bool
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    docs_index: str | None = None

    @property
    def failures(self) -> list[str]:
        return [f"{o.label}: {o.detail}" for o in self.outcomes if not o.success]

    def summary(self) -> dict[str, Any]:
        """Compact, secret-free form for the audit trail."""
        return {
            "gate": self.name,
            "database": self.database,
            "success": self.success,
            "evaluated": len(self.outcomes),
            "failed": self.failures,
        }


def _gx_name(text: str) -> str:
    """A name GX can use as a file name: no dots either, GX turns a dotted suite name into folders."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:120]


def suite_name(gate: str, asset: str) -> str:
    """The GX suite (and query asset) of one asset of a gate: ``after-4_3_0__row_counts``."""
    return _gx_name(f"{gate}__{asset}")


# GX's import (scipy, pandas, SQLAlchemy: seconds of CPU) and loading its file context
# are a gate's fixed cost, paid once per process; the context is reused by every gate
# of the same work directory (a phase runs its gates one after another, never at once).
_CONTEXTS: dict[Path, Any] = {}
_DATASOURCES: dict[tuple[Path, str], str] = {}
_GX_IMPORT = threading.Lock()
# Data Docs pages of gates already run, not yet rendered (see run_gate): GX roots with some, and
# the list itself, kept in a file under each root.
log = logging.getLogger(__name__)
# A GX root (``work/gx``) is GX's context directory itself: great_expectations.yml, stores, Data Docs.
_PENDING_FILE = Path("uncommitted", "apim-upgrade-pending-data-docs.jsonl")
DATA_DOCS_SITE = Path("uncommitted", "data_docs", "local_site")  # under a GX root
# Below this much free space Data Docs are left for a later build (a page is tens of kB).
DOCS_MIN_FREE = 8 * 1024 * 1024
_PENDING_ROOTS: set[Path] = set()
_PENDING_LOCK = threading.Lock()


def prewarm() -> None:
    """Import GX in a background thread while the caller waits on the database (a copy, a script).

    Only an import: if it fails, the gate's own import raises the error where it matters.
    """
    threading.Thread(target=_import_gx, name="gx-import", daemon=True).start()


def _import_gx() -> None:
    with _GX_IMPORT:
        try:
            import great_expectations
            import great_expectations.checkpoint
            import great_expectations.expectations  # noqa: F401
        except ImportError:
            pass  # reported by run_gate, in the flow's own thread


def _context(gx_root: Path) -> Any:
    root = gx_root.resolve()
    context = _CONTEXTS.get(root)
    if context is None or not (root / "great_expectations.yml").exists():
        with _GX_IMPORT:  # never import GX in two threads at once
            import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _adopt_nested_project(root)
        _set_aside_torn_files(root)
        # context_root_dir, not project_root_dir: GX would put its project in a "gx" folder of its
        # own inside the root (work/gx/gx/...).
        context = gx.get_context(mode="file", context_root_dir=str(root))
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXTS[root] = context
        for key in [k for k in _DATASOURCES if k[0] == root]:
            del _DATASOURCES[key]
    return context


def _adopt_nested_project(root: Path) -> None:
    """A work directory of an earlier release holds its GX project one level down (``gx/gx/``):
    moved up once, so its validation results stay in the index and its pending pages get built."""
    nested = root / "gx"
    if (root / "great_expectations.yml").exists() or not (nested / "great_expectations.yml").is_file():
        return
    for entry in nested.iterdir():
        os.replace(entry, root / entry.name)
    nested.rmdir()
    log.info("GX project %s moved up to %s", nested, root)


def _set_aside_torn_files(root: Path) -> list[Path]:
    """GX writes its JSON and YAML in place: a full disk or a kill can leave one cut short, and
    GX then fails on it forever. Such a file is moved to ``gx-damaged/`` (kept, not deleted):
    suites and definitions are rebuilt from expectations/ by the next gate; a cut validation
    result was never a whole one."""
    moved: list[Path] = []
    if not root.is_dir():
        return moved
    for path in sorted(root.rglob("*.json")):
        try:
            json.loads(path.read_bytes() or b"x")
        except ValueError:
            target = root.parent / "gx-damaged" / path.relative_to(root.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            log.warning("GX file %s was cut short (full disk or crash): moved to %s", path, target)
            moved.append(target)
    return moved


def _datasource(context: Any, gx_root: Path, server: db.PgServer, database: str) -> Any:
    """The database's datasource, written to the project file only when new or changed."""
    name = _gx_name(f"pg-{database}")
    url = server.sqlalchemy_url(database, PASSWORD_VARIABLE)
    key = (gx_root.resolve(), name)
    if _DATASOURCES.get(key) != url:
        context.data_sources.add_or_update_postgres(name=name, connection_string=url)
        _DATASOURCES[key] = url
    return context.data_sources.get(name)


def _close_connections(context: Any) -> None:
    """Return every connection GX's engines hold: an idle session on a copy would block its
    DROP DATABASE (a rebuilt copy, a rehearsal's clean-up) and a template copy of it."""
    for source in context.data_sources.all().values():
        execution_engine = getattr(source, "_execution_engine", None)
        for engine in (getattr(source, "_engine", None), getattr(execution_engine, "engine", None)):
            if engine is not None:
                engine.dispose()


def _query_asset(source: Any, name: str, query: str) -> Any:
    """A query asset and its batch definition; an unchanged one is reused, a changed one replaced."""
    if name in source.get_asset_names():
        asset = source.get_asset(name)
        if asset.query == query and "whole" in {b.name for b in asset.batch_definitions}:
            return asset.get_batch_definition("whole")
        source.delete_asset(name)
    return source.add_query_asset(name=name, query=query).add_batch_definition_whole_table("whole")


def run_gate(gx_root: Path, server: db.PgServer, spec: GateSpec, run_name: str | None = None) -> GateResult:
    """Validate every asset of ``spec`` and queue its Data Docs pages; never raises on failures.

    ``run_name`` names the run in Data Docs (default: the gate's name), e.g. the phase and step.
    """
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    if server.password is not None:
        os.environ[PASSWORD_VARIABLE] = server.password.get_secret_value()
    context = _context(gx_root)
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    source = _datasource(context, gx_root, server, spec.database)
    validations = []
    labels: dict[str, dict[str, str]] = {}
    key_columns: dict[str, str | None] = {}
    for asset_spec in spec.assets:
        asset_name = suite_name(spec.name, asset_spec.name)
        batch = _query_asset(source, asset_name, asset_spec.query)
        suite = gx.ExpectationSuite(name=asset_name)
        for exp in asset_spec.expectations:
            suite.add_expectation(getattr(gxe, exp.kind)(**exp.kwargs, meta={"label": exp.label}))
        suite = context.suites.add_or_update(suite)
        validations.append(
            context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=asset_name, data=batch, suite=suite)
            )
        )
        labels[asset_name] = {e.kind: e.label for e in asset_spec.expectations}
        key_columns[asset_name] = asset_spec.key_column
    result_format: dict[str, Any] = {"result_format": "COMPLETE"}
    keys = sorted({k for k in key_columns.values() if k})
    if keys:
        result_format["unexpected_index_column_names"] = keys
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=_gx_name(spec.name),
            validation_definitions=validations,
            actions=[],
            result_format=result_format,
        )
    )
    try:
        run = checkpoint.run(run_id=RunIdentifier(run_name=_gx_name(run_name or spec.name)))
    finally:
        _close_connections(context)
    # Data Docs are rendered once per phase (build_pending_data_docs, from the phase flows' hooks),
    # not per gate: every build re-renders the index, and a schema gate's page is large. A failed
    # gate's pages are rendered now, so the link in its GateFailed message works at once.
    _defer_data_docs(
        gx_root,
        [*run.run_results, *(ExpectationSuiteIdentifier(name=vr.suite_name) for vr in run.run_results.values())],
    )
    if not run.success:
        build_pending_data_docs(gx_root)
    outcomes: list[ExpectationOutcome] = []
    for vr in run.run_results.values():
        asset_name = vr.suite_name
        for er in vr.results:
            cfg = er.expectation_config
            label = ((cfg.meta or {}).get("label") or cfg.type) if cfg else "expectation"
            outcomes.append(
                ExpectationOutcome(
                    asset=asset_name,
                    label=label,
                    success=bool(er.success),
                    detail="ok" if er.success else _describe_failure(er),
                )
            )
    docs = context.get_docs_sites_urls(only_if_exists=False)  # where the index is, built or still pending
    return GateResult(
        name=spec.name,
        database=spec.database,
        success=bool(run.success),
        outcomes=outcomes,
        docs_index=docs[0]["site_url"] if docs else None,
    )


def _defer_data_docs(gx_root: Path, identifiers: list[Any]) -> None:
    """Note what is still to render, in memory (which GX roots) and in a file beside GX's store
    (which pages): a run killed before its phase's build leaves the list for the next build."""
    root = gx_root.resolve()
    # Each line starts with a newline, so a line a killed run left unfinished ends there.
    lines = "".join("\n" + json.dumps([type(i).__name__, list(i.to_tuple())]) for i in identifiers)
    with _PENDING_LOCK:
        _PENDING_ROOTS.add(root)
        with (root / _PENDING_FILE).open("a", encoding="utf-8") as out:
            out.write(lines)


def build_pending_data_docs(gx_root: Path | None = None) -> None:
    """Render the Data Docs pages of every gate run since the last build (of ``gx_root``, or of
    every root this process ran a gate in), then the index, which lists every validation result
    in the GX store."""
    with _PENDING_LOCK:
        roots = [gx_root.resolve()] if gx_root is not None else sorted(_PENDING_ROOTS)
        _PENDING_ROOTS.difference_update(roots)
    if not roots:
        return  # a phase that ran no gate (e.g. a rerun over verified copies) never imports GX
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    kinds = {k.__name__: k for k in (ExpectationSuiteIdentifier, ValidationResultIdentifier)}
    for root in roots:
        pending = root / _PENDING_FILE
        with _PENDING_LOCK:
            try:
                lines = pending.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                continue
        identifiers: dict[str, Any] = {}  # a suite validated by several gates is rendered once
        for line in lines:
            try:
                kind, parts = json.loads(line)
                identifiers[line] = kinds[kind].from_tuple(tuple(parts))
            except (ValueError, KeyError, TypeError):  # empty, or cut short by a killed run
                continue
        if identifiers and shutil.disk_usage(root).free < DOCS_MIN_FREE:
            # GX would log a stack per page it cannot write; the pages stay pending for the next build.
            log.warning("Data Docs of %s not rendered: the disk is (nearly) full; the next run renders them", root)
            continue
        if identifiers:
            _context(root).build_data_docs(resource_identifiers=list(identifiers.values()))
            data_docs_offline.make_offline(root / DATA_DOCS_SITE)  # GX's pages load from CDNs
        with _PENDING_LOCK:  # only what was rendered: a gate may have run meanwhile in another thread
            rest = pending.read_text(encoding="utf-8").splitlines()[len(lines) :]
            if rest:
                write_atomically(pending, "".join(f"\n{r}" for r in rest))
            else:
                pending.unlink()


def _describe_failure(er: Any) -> str:
    """What exactly failed, in words an operator can act on."""
    if er.exception_info and er.exception_info.get("raised_exception"):
        return f"could not be evaluated: {er.exception_info.get('exception_message')}"
    result = er.result or {}
    rows = result.get("unexpected_index_list")
    if rows:
        shown = [", ".join(f"{k}={v}" for k, v in row.items()) for row in rows[:50]]
        more = f" (+{len(rows) - 50} more)" if len(rows) > 50 else ""
        return "; ".join(shown) + more
    missing = result.get("partial_missing_list")
    extra = result.get("partial_unexpected_list") if result.get("missing_count") is not None else None
    if missing or extra:
        parts = []
        if missing:
            count = result.get("missing_count", len(missing))
            parts.append(f"missing ({count}): " + ", ".join(map(str, missing)))
        if extra:
            count = result.get("unexpected_count", len(extra))
            parts.append(f"unexpected ({count}): " + ", ".join(map(str, extra)))
        return "; ".join(parts)
    return str(result.get("partial_unexpected_list") or result)
