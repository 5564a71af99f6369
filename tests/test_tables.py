"""Warehouse tables declared once as polars schemas: their DDL and their typed frames."""

from __future__ import annotations

from decimal import Decimal

import duckdb
import polars as pl
import pytest
import yaml

from orchestration.defs.ingestion.landing import RAW_DDL, RAW_MIGRATIONS
from orchestration.defs.tables import MONEY, create_table_ddl, duckdb_type, typed_frames
from orchestration.defs.wallets.ledger_table import LEDGER_COLUMNS, LEDGER_DDL, LEDGER_SCHEMA
from orchestration.settings import REPO_ROOT


def test_the_ledger_ddl_creates_the_ledger_table_column_for_column():
    con = duckdb.connect()
    con.execute(LEDGER_DDL)
    con.execute(LEDGER_DDL)  # idempotent: every run executes it
    described = con.execute(
        "select column_name, data_type, is_nullable from information_schema.columns "
        "where table_schema = 'billing' and table_name = 'wallet_ledger' "
        "order by ordinal_position"
    ).fetchall()
    money = ("DECIMAL(38,18)", "NO")
    assert described == [
        ("entry_id", "VARCHAR", "NO"),
        ("wallet_id", "VARCHAR", "NO"),
        ("customer_id", "VARCHAR", "NO"),
        ("currency", "VARCHAR", "NO"),
        ("grant_id", "VARCHAR", "NO"),
        ("grant_kind", "VARCHAR", "NO"),
        ("entry_type", "VARCHAR", "NO"),
        ("entry_ts", "TIMESTAMP", "NO"),
        ("entry_order", "INTEGER", "NO"),
        ("usage_hour", "TIMESTAMP", "YES"),
        ("billing_period_start", "TIMESTAMP", "NO"),
        ("amount", *money),
        ("grant_remaining_after", *money),
        ("wallet_balance_after", *money),
    ]
    assert [name for name, *_ in described] == LEDGER_COLUMNS


def test_the_ledger_ddl_numbers_a_ledger_booked_before_entry_order():
    con = duckdb.connect()
    con.execute("create schema billing; create table billing.wallet_ledger (entry_id varchar)")
    con.execute(LEDGER_DDL)
    assert [c[0] for c in con.execute("select * from billing.wallet_ledger").description] == [
        "entry_id",
        "entry_order",
    ]


def test_typed_frames_keep_the_schema_with_and_without_rows():
    schema = {"id": pl.String, "amount": MONEY}
    frames = typed_frames(
        {"full": [{"id": "a", "amount": Decimal("0.1")}], "empty": []},
        {"full": schema, "empty": schema},
    )
    assert frames["full"].schema == frames["empty"].schema == pl.Schema(schema)
    assert frames["full"].rows() == [("a", Decimal("0.1"))]
    assert frames["empty"].height == 0


def test_types_without_a_warehouse_type_are_refused():
    assert duckdb_type(pl.Int64) == "bigint"
    with pytest.raises(ValueError, match="store naive UTC datetimes"):
        duckdb_type(pl.Datetime("us", "UTC"))
    with pytest.raises(ValueError, match="no DuckDB type for Float64"):
        duckdb_type(pl.Float64)
    with pytest.raises(ValueError, match=r"nullable columns \['nope'\] are not in the schema"):
        create_table_ddl("billing.t", LEDGER_SCHEMA, nullable=["nope"])


def test_every_raw_table_is_a_dbt_source_column_for_column():
    """Ingestion's DDL (DuckDB) and the dbt sources (what Spark's ``create_lake_sources``
    registers over the lake, what the docs describe) declare the same tables, columns, order
    and types."""
    con = duckdb.connect()
    con.execute(RAW_DDL)
    con.execute(RAW_MIGRATIONS)
    ddl: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in con.execute(
        "select table_name, column_name, data_type from information_schema.columns "
        "where table_schema = 'raw' order by table_name, ordinal_position"
    ).fetchall():
        ddl.setdefault(table, []).append((column, data_type.lower()))
    sources_yml = REPO_ROOT / "dbt_project/models/staging/_tokenbill_raw__sources.yml"
    (source,) = yaml.safe_load(sources_yml.read_text())["sources"]
    declared = {
        table["name"]: [(c["name"], c["data_type"]) for c in table["columns"]]
        for table in source["tables"]
    }
    assert source["schema"] == "raw"
    assert declared == ddl
    assert all(c.get("description") for t in source["tables"] for c in t["columns"])
