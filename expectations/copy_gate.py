"""The gate that proves a database copy is faithful to its source.

A handful of expectations, whatever the number of tables:
same table set, every table's exact row count equal to the source snapshot,
every source index present, every object of the source (tables, columns, indexes,
constraints, sequences) present, and (shared DB) the registry indexes the 4.2.0
migration needs.
"""

from __future__ import annotations

from apim_upgrade.postgres import queries
from apim_upgrade.postgres.catalog import Snapshot
from apim_upgrade.proof.gates import Expectation, GateSpec, QueryAsset
from expectations.migration_gate import indexes_asset, survival_asset


def build_copy_gate(role: str, source: Snapshot, copy: Snapshot, must_survive: list[str] | None = None) -> GateSpec:
    """Gate for ``copy`` (a snapshot of the target) against ``source`` (``role`` is apim or shared);
    ``must_survive``: labels of the source objects the copy must have (default: all of them)."""
    schema = source.db_schema
    counts_query = queries.row_count_comparison(source.row_counts, copy.row_counts)
    required_indexes = sorted({i.name for i in source.indexes})
    if role == "shared":
        required_indexes = sorted(set(required_indexes) | set(queries.REGISTRY_INDEXES))
    assets = [
        QueryAsset(
            name="row_counts",
            query=counts_query.as_string(),
            key_column="table_name",
            expectations=[
                Expectation(
                    "same table set as the source",
                    "ExpectColumnDistinctValuesToEqualSet",
                    {"column": "table_name", "value_set": source.tables},
                ),
                Expectation(
                    "table missing from the copy",
                    "ExpectColumnValuesToNotBeNull",
                    {"column": "actual_rows"},
                ),
                Expectation(
                    "table absent from the source snapshot",
                    "ExpectColumnValuesToNotBeNull",
                    {"column": "expected_rows"},
                ),
                Expectation(
                    "row count differs from the source snapshot",
                    "ExpectColumnPairValuesToBeEqual",
                    {"column_A": "expected_rows", "column_B": "actual_rows"},
                ),
            ],
        )
    ]
    if required_indexes:
        label = "required indexes present" + (" (incl. registry indexes for 4.2.0)" if role == "shared" else "")
        assets.append(indexes_asset(schema, required_indexes, label))
    survivors = sorted(o.label() for o in source.objects()) if must_survive is None else sorted(must_survive)
    if survivors:
        assets.append(survival_asset(schema, survivors))
    return GateSpec(name=f"copy-{role}", database=copy.database, assets=assets)
