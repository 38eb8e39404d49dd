"""Schema conformance against the real PostgreSQL and the genuine WSO2 DDL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apim_upgrade.errors import DatabaseError
from apim_upgrade.postgres import db
from apim_upgrade.postgres.schema_diff import (
    ColumnDef,
    Difference,
    SchemaCatalog,
    TableDef,
    diff_catalogs,
    normalise_default,
    normalise_index,
    read_catalog,
    reference_catalog,
    scratch_database,
)
from tests.conftest import SHARED_WSO2

DBSCRIPTS = SHARED_WSO2 / "dbscripts"
APIM_440 = DBSCRIPTS / "4.4.0" / "apimgt" / "postgresql.sql"

needs_ddl = pytest.mark.skipif(not APIM_440.is_file(), reason=f"genuine WSO2 DDL not found under {DBSCRIPTS}")


# --------------------------------------------------------------------------- no database


def _catalog(tables: dict[str, TableDef], sequences: list[str] | None = None) -> SchemaCatalog:
    return SchemaCatalog(database="d", db_schema="public", tables=tables, sequences=sequences or [])


def test_keys_and_order_are_stable() -> None:
    int_col = ColumnDef(data_type="integer", nullable=False, default="nextval('t_seq'::regclass)")
    want = _catalog(
        {
            "t": TableDef(
                columns={"id": int_col, "v": ColumnDef(data_type="character varying(15)", nullable=True)},
                primary_key=["id"],
                indexes={"t_pkey": "CREATE UNIQUE INDEX ON t USING btree (id)"},
            ),
            "gone": TableDef(columns={}),
        },
        ["t_seq"],
    )
    have = _catalog(
        {
            "t": TableDef(
                columns={"id": int_col, "v": ColumnDef(data_type="character varying(10)", nullable=True)},
                primary_key=None,
                indexes={},
            ),
        },
        ["old_seq"],
    )
    diffs = diff_catalogs(have, want)
    assert [d.key() for d in diffs] == [
        "sequence_missing:t_seq",
        "sequence_extra:old_seq",
        "table_missing:gone",
        "column_type:t.v",
        "primary_key:t",
        "index_missing:t.t_pkey",
    ]
    assert diffs[3] == Difference("column_type", "t", "v", "character varying(15)", "character varying(10)")
    assert diffs[4].expected == "(id)" and diffs[4].actual is None
    assert diff_catalogs(want, want) == []
    assert SchemaCatalog.model_validate_json(want.model_dump_json()) == want


def test_normalisation() -> None:
    assert (
        normalise_index(
            'CREATE UNIQUE INDEX "Odd Name" ON public.am_api USING btree (api_id)',
            '"Odd Name"',
            "public",
            "am_api",
        )
        == "CREATE UNIQUE INDEX ON am_api USING btree (api_id)"
    )
    assert normalise_default("NULL::character varying") is None
    assert normalise_default("NULL::character varying(45)") is None
    assert normalise_default("nextval('x_seq'::regclass)") == "nextval('x_seq'::regclass)"
    assert normalise_default("'NULL'::character varying") == "'NULL'::character varying"


# --------------------------------------------------------------------------- real database


@pytest.fixture(scope="module")
def reference_440(pg: db.PgServer) -> SchemaCatalog:
    if not APIM_440.is_file():
        pytest.skip(f"genuine WSO2 DDL not found under {DBSCRIPTS}")
    return reference_catalog(pg, APIM_440)


@pytest.fixture(scope="module")
def live_440(pg: db.PgServer) -> Iterator[tuple[str, SchemaCatalog]]:
    """A database loaded with genuine 4.4.0 and its catalogue read before any test touches it."""
    if not APIM_440.is_file():
        pytest.skip(f"genuine WSO2 DDL not found under {DBSCRIPTS}")
    with scratch_database(pg, [APIM_440], prefix="t_schema_diff") as name:
        yield name, read_catalog(pg, name)


@needs_ddl
def test_identical_ddl_has_no_difference(reference_440: SchemaCatalog, live_440: tuple[str, SchemaCatalog]) -> None:
    _, pristine = live_440
    assert len(reference_440.tables) == 205  # as shared/wso2/README.md counts them
    assert reference_440.database == f"ddl:{APIM_440}"
    assert diff_catalogs(pristine, reference_440) == []


@needs_ddl
def test_diff_names_each_change(
    pg: db.PgServer, reference_440: SchemaCatalog, live_440: tuple[str, SchemaCatalog]
) -> None:
    name, _ = live_440
    with db.session(pg, name) as conn:
        db.execute_script(
            conn,
            """
            ALTER TABLE am_api DROP COLUMN log_level;
            DROP INDEX idx_aai_ctx;
            ALTER TABLE am_service_catalog ALTER COLUMN md5 TYPE varchar(100);
            ALTER TABLE am_api ALTER COLUMN gateway_vendor SET DEFAULT 'other';
            DROP TABLE am_transaction_records;
            ALTER TABLE am_llm_provider ALTER COLUMN description SET NOT NULL;
            CREATE SEQUENCE zz_extra_seq;
            -- ours, never a difference:
            CREATE SCHEMA apim_upgrade;
            CREATE TABLE apim_upgrade.audit_log (seq bigint PRIMARY KEY);
            """,
        )
    diffs = diff_catalogs(read_catalog(pg, name), reference_440)
    assert {d.key(): d for d in diffs} == {
        "sequence_extra:zz_extra_seq": Difference("sequence_extra", "", "zz_extra_seq", None, "zz_extra_seq"),
        "column_missing:am_api.log_level": Difference(
            "column_missing",
            "am_api",
            "log_level",
            "character varying(255) DEFAULT 'OFF'::character varying",
            None,
        ),
        "column_default:am_api.gateway_vendor": Difference(
            "column_default",
            "am_api",
            "gateway_vendor",
            "'wso2'::character varying",
            "'other'::character varying",
        ),
        "index_missing:am_api.idx_aai_ctx": Difference(
            "index_missing", "am_api", "idx_aai_ctx", "CREATE INDEX ON am_api USING btree (context)", None
        ),
        "column_nullable:am_llm_provider.description": Difference(
            "column_nullable", "am_llm_provider", "description", "NULL", "NOT NULL"
        ),
        "column_type:am_service_catalog.md5": Difference(
            "column_type", "am_service_catalog", "md5", "character varying(512)", "character varying(100)"
        ),
        "table_missing:am_transaction_records": Difference(
            "table_missing",
            "am_transaction_records",
            "",
            "6 columns, primary key (id), 1 indexes",
            None,
        ),
    }
    assert [d.key() for d in diffs] == [  # sorted by table, then kind, then name
        "sequence_extra:zz_extra_seq",
        "column_missing:am_api.log_level",
        "column_default:am_api.gateway_vendor",
        "index_missing:am_api.idx_aai_ctx",
        "column_nullable:am_llm_provider.description",
        "column_type:am_service_catalog.md5",
        "table_missing:am_transaction_records",
    ]
    with pytest.raises(DatabaseError, match="own history schema"):
        read_catalog(pg, name, "apim_upgrade")


def test_scratch_database_is_dropped_and_bad_ddl_is_named(pg: db.PgServer, tmp_path: Path) -> None:
    bad = tmp_path / "broken.sql"
    bad.write_text("CREATE TABLE ok_table (a int);\nCREATE TABLE broken (a no_such_type);\n")
    with pytest.raises(DatabaseError, match=r"broken\.sql") as caught:
        with scratch_database(pg, [bad], prefix="t_scratch_bad"):
            pass
    assert "psql -v ON_ERROR_STOP=1" in str(caught.value)
    with pytest.raises(DatabaseError, match="cannot read DDL file"):
        with scratch_database(pg, [tmp_path / "missing.sql"], prefix="t_scratch_bad"):
            pass
    with scratch_database(pg, [], prefix="t_scratch_ok") as name:
        assert read_catalog(pg, name).tables == {}
    with db.session(pg, "postgres", read_only=True) as conn:
        left = db.fetch_all(
            conn,
            "SELECT datname FROM pg_database WHERE datname LIKE 't\\_scratch\\_%%' OR datname = %s",
            (name,),
        )
    assert left == []
