"""Gates around a change to a target database (a JVM migration run, a SQL script).

A handful of expectations whatever the number of tables: no table lost,
every row count unchanged unless declared, nothing that existed before gone
(tables, columns, indexes, constraints, sequences) unless WSO2 removes it by
name or the plan accepts it, and the tables/columns (and indexes) the new
version requires are present.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql

from apim_upgrade.postgres import queries
from apim_upgrade.postgres.catalog import Snapshot
from apim_upgrade.proof.gates import Expectation, GateSpec, QueryAsset


def build_change_gate(
    name: str,
    database: str,
    before: Snapshot,
    after: Snapshot,
    *,
    required_columns: Iterable[str] = (),
    required_indexes: Iterable[str] = (),
    count_may_change: Iterable[str] = (),
    must_survive: Iterable[str] = (),
) -> GateSpec:
    """``before``/``after``: snapshots taken just before and after the change (their exact counts are
    what is validated); ``required_*``: what must exist after; ``must_survive``: labels
    (``column am_api.x_custom``) of the objects of ``before`` that may not be gone."""
    schema = before.db_schema
    may_change = set(count_may_change)
    expected = {t: n for t, n in before.row_counts.items() if t not in may_change}
    assets = [
        QueryAsset(
            name="row_counts",
            query=queries.row_count_comparison(expected, after.row_counts).as_string(),
            key_column="table_name",
            expectations=[
                Expectation(
                    "table lost by the change",
                    "ExpectColumnValuesToNotBeNull",
                    {"column": "actual_rows"},
                ),
                Expectation(
                    "row count changed (not declared as expected)",
                    "ExpectColumnPairValuesToBeEqual",
                    {
                        "column_A": "expected_rows",
                        "column_B": "actual_rows",
                        "ignore_row_if": "either_value_is_missing",
                    },
                ),
            ],
        )
    ]
    columns = sorted(set(required_columns))
    if columns:
        assets.append(
            QueryAsset(
                name="columns",
                query=sql.SQL(
                    "SELECT table_name || '.' || column_name AS table_column "
                    "FROM information_schema.columns WHERE table_schema = {}"
                )
                .format(sql.Literal(schema))
                .as_string(),
                expectations=[
                    Expectation(
                        "required tables and columns present",
                        "ExpectColumnDistinctValuesToContainSet",
                        {"column": "table_column", "value_set": columns},
                    )
                ],
            )
        )
    indexes = sorted(set(required_indexes))
    if indexes:
        assets.append(indexes_asset(schema, indexes, "required indexes present"))
    survivors = sorted(set(must_survive))
    if survivors:
        assets.append(survival_asset(schema, survivors))
    return GateSpec(name=name, database=database, assets=assets)


def survival_asset(schema: str, must_survive: list[str]) -> QueryAsset:
    """One expectation: every object that existed before (and may not go) still exists, read live."""
    return QueryAsset(
        name="objects",
        query=queries.schema_objects(schema).as_string(),
        expectations=[
            Expectation(
                "nothing that existed before is gone (tables, columns, indexes, constraints, sequences; "
                "unless WSO2's target DDL removes it by name or the plan accepts it)",
                "ExpectColumnDistinctValuesToContainSet",
                {"column": "object", "value_set": must_survive},
            )
        ],
    )


def indexes_asset(schema: str, required: list[str], label: str) -> QueryAsset:
    """One expectation: every required index name exists in the schema."""
    return QueryAsset(
        name="indexes",
        query=queries.index_names(schema).as_string(),
        expectations=[
            Expectation(label, "ExpectColumnDistinctValuesToContainSet", {"column": "indexname", "value_set": required})
        ],
    )
