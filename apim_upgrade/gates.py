"""Runs Great Expectations gates against PostgreSQL through a SQL datasource.

A gate is a few query assets (small result sets computed inside the
database: counts, catalogue rows) and the expectations on each. Nothing is
loaded into pandas; GX evaluates the expectations as SQL. Results go to
GX's Data Docs in the work directory.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apim_upgrade import db

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
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:120]


def run_gate(gx_root: Path, server: db.PgServer, spec: GateSpec) -> GateResult:
    """Validate every asset of ``spec`` and refresh Data Docs; never raises on failures."""
    import great_expectations as gx  # heavy import, only when a gate runs
    import great_expectations.expectations as gxe
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    if server.password is not None:
        os.environ[PASSWORD_VARIABLE] = server.password.get_secret_value()
    context = gx.get_context(mode="file", project_root_dir=str(gx_root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_or_update_postgres(
        name=_gx_name(f"pg-{spec.database}"),
        connection_string=server.sqlalchemy_url(spec.database, PASSWORD_VARIABLE),
    )
    validations = []
    labels: dict[str, dict[str, str]] = {}
    key_columns: dict[str, str | None] = {}
    for asset_spec in spec.assets:
        asset_name = _gx_name(f"{spec.name}.{asset_spec.name}")
        if asset_name in source.get_asset_names():
            source.delete_asset(asset_name)
        asset = source.add_query_asset(name=asset_name, query=asset_spec.query)
        batch = asset.add_batch_definition_whole_table("whole")
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
            actions=[UpdateDataDocsAction(name="update_data_docs")],
            result_format=result_format,
        )
    )
    run = checkpoint.run()
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
    docs = context.get_docs_sites_urls()
    return GateResult(
        name=spec.name,
        database=spec.database,
        success=bool(run.success),
        outcomes=outcomes,
        docs_index=docs[0]["site_url"] if docs else None,
    )


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
