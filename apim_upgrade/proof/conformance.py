"""Is a migrated database a true 4.4.0? Compare it with the version's own DDL.

The reference is the target pack's DDL loaded into a scratch database; both
catalogues are compared (tables, columns with type/nullability/default,
primary keys, indexes, extra constraints, sequences). Differences fail unless
the plan lists their keys as accepted; an extra object also passes when it is one
of the estate's customisations carried through from the source (see
``customisations.py``) or one the plan accepts (``accepted_customisations``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql

from apim_upgrade.postgres import db
from apim_upgrade.postgres.catalog import SchemaObject
from apim_upgrade.postgres.schema_diff import Difference, SchemaCatalog, diff_catalogs, read_catalog, reference_catalog
from apim_upgrade.proof.gates import Expectation, GateSpec, QueryAsset
from apim_upgrade.wso2.distribution import ddl_file


@dataclass(frozen=True)
class Conformance:
    role: str
    database: str
    reference: Path
    differences: list[Difference]
    accepted: set[str]
    reference_catalog: SchemaCatalog
    # Extra objects that pass as the estate's own: customisations carried through, or accepted.
    customisations: frozenset[SchemaObject] = field(default_factory=frozenset)
    actual_objects: frozenset[SchemaObject] = field(default_factory=frozenset)  # what the database has

    def is_accepted(self, difference: Difference) -> bool:
        return difference.key() in self.accepted or difference.extra_object() in self.customisations

    @property
    def unaccepted(self) -> list[Difference]:
        return [d for d in self.differences if not self.is_accepted(d)]

    def rows(self) -> list[dict[str, object]]:
        return [
            {
                "database": self.database,
                "kind": d.kind,
                "object": d.key().split(":", 1)[1],
                "key": d.key(),
                "expected": d.expected,
                "actual": d.actual,
                "accepted": self.is_accepted(d),
                "customisation": d.extra_object() in self.customisations,
            }
            for d in self.differences
        ]


def check(
    server: db.PgServer,
    role: str,
    dbname: str,
    dbscripts: Path,
    accepted: set[str],
    schema: str = "public",
    cache_dir: Path | None = None,
    customisations: frozenset[SchemaObject] = frozenset(),
) -> Conformance:
    ddl = ddl_file(dbscripts, role)
    reference = reference_catalog(server, ddl, cache_dir)
    actual = read_catalog(server, dbname, schema)
    differences = diff_catalogs(actual, reference)
    return Conformance(role, dbname, ddl, differences, accepted, reference, customisations, frozenset(actual.objects()))


def conformance_gate(result: Conformance, schema: str = "public") -> GateSpec:
    """GX view of the check: required columns present (computed in the database) and every
    difference listed in Data Docs, failing on those not accepted."""
    required = sorted(f"{t}.{c}" for t, tdef in result.reference_catalog.tables.items() for c in tdef.columns)
    columns_query = sql.SQL(
        "SELECT table_name || '.' || column_name AS table_column FROM information_schema.columns "
        "WHERE table_schema = {}"
    ).format(sql.Literal(schema))
    rows = result.rows()
    if rows:
        values = sql.SQL(", ").join(
            sql.SQL("({}, {}, {}, {}, {})").format(
                sql.Literal(r["key"]),
                sql.Literal(r["kind"]),
                sql.Literal(r["expected"]),
                sql.Literal(r["actual"]),
                sql.Literal(r["accepted"]),
            )
            for r in rows
        )
        diff_query = sql.SQL("SELECT * FROM (VALUES {}) AS d(difference, kind, expected, actual, accepted)").format(
            values
        )
    else:
        diff_query = sql.Composed(
            [
                sql.SQL(
                    "SELECT NULL::text AS difference, NULL::text AS kind, NULL::text AS expected, "
                    "NULL::text AS actual, true AS accepted WHERE false"
                )
            ]
        )
    return GateSpec(
        name=f"conformance-{result.role}",
        database=result.database,
        assets=[
            QueryAsset(
                name="columns",
                query=columns_query.as_string(),
                expectations=[
                    Expectation(
                        f"every table and column of {result.reference} present",
                        "ExpectColumnDistinctValuesToContainSet",
                        {"column": "table_column", "value_set": required},
                    )
                ],
            ),
            QueryAsset(
                name="differences",
                query=diff_query.as_string(),
                key_column="difference",
                expectations=[
                    Expectation(
                        "difference from the reference DDL not accepted by the plan "
                        "(nor an extra object carried through from the customised source)",
                        "ExpectColumnValuesToBeInSet",
                        {"column": "accepted", "value_set": [True]},
                    )
                ],
            ),
        ],
    )
