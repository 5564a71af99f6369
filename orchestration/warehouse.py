"""The warehouse operations tokenbill's Python assets need, on DuckDB or on Spark.

Three operations cover what the catalog loader, the wallet ledger and the invoice export do
with the warehouse: replace whole tables (the ``catalog.*`` tables), replace the rows of a
table that match a condition (a month of ``billing.wallet_ledger``) and read a query's rows
(the invoice lines of a period, a month's draw inputs). What they read is small (per
wallet-hour, per invoice), so it comes back as Arrow on both engines; SQL parameters are
positional ``?`` on both.

``DuckDBWarehouse`` is today's behaviour, on an open connection (every replacement in one
transaction). ``SparkWarehouse`` runs the same operations in a ``SparkSession``'s catalog
(tables in its warehouse directory or metastore): Spark has no multi-statement transaction,
so each table is replaced on its own (``insert overwrite``, which a failed write leaves as it
was), the catalog's tables one after the other.

``lake_replace_tables`` is how a table reaches the dbt project's Spark sources, which are
Parquet tables over ``{lake root}/{schema}/{table}/`` (``macros/portable/lake_sources.sql``):
the catalog loader's tables, written beside the raw events (``defs/ingestion/lake.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import duckdb
import pyarrow as pa


class WarehouseTables(Protocol):
    """What an asset may do with the warehouse, whichever the engine."""

    def replace_tables(self, schema: str, tables: Mapping[str, pa.Table]) -> None:
        """Create or replace ``schema.<name>`` with each table's rows and types."""

    def replace_where(
        self, table: str, condition: str, params: Sequence[Any], rows: pa.Table
    ) -> None:
        """Delete the rows of ``table`` matching ``condition`` (SQL, ``?`` parameters), then
        insert ``rows`` (by column name)."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """The rows of a query (``?`` parameters)."""


class DuckDBWarehouse:
    """The operations on an open DuckDB connection (``Warehouse.connect()``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection inside one transaction: committed on success, rolled back on error."""
        self.con.execute("begin transaction")
        try:
            yield self.con
            self.con.execute("commit")
        except Exception:
            self.con.execute("rollback")
            raise

    def replace_tables(self, schema: str, tables: Mapping[str, pa.Table]) -> None:
        with self._transaction() as con:
            con.execute(f"create schema if not exists {schema}")
            for name, table in tables.items():
                con.register("incoming", table)
                con.execute(f"create or replace table {schema}.{name} as select * from incoming")
                con.unregister("incoming")

    def replace_where(
        self, table: str, condition: str, params: Sequence[Any], rows: pa.Table
    ) -> None:
        with self._transaction() as con:
            con.execute(f"delete from {table} where {condition}", list(params))
            if rows.num_rows:
                con.register("incoming", rows)
                con.execute(f"insert into {table} by name select * from incoming")
                con.unregister("incoming")

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        return self.con.execute(sql, list(params)).to_arrow_table()


class SparkWarehouse:
    """The operations in a ``pyspark.sql.SparkSession``'s catalog (session time zone UTC:
    tokenbill's timestamps are naive UTC)."""

    def __init__(self, spark):
        self.spark = spark
        spark.conf.set("spark.sql.session.timeZone", "UTC")

    def _frame(self, table: pa.Table):
        return self.spark.createDataFrame(table)

    def replace_tables(self, schema: str, tables: Mapping[str, pa.Table]) -> None:
        self.spark.sql(f"create database if not exists {schema}")
        for name, table in tables.items():
            self._frame(table).write.mode("overwrite").saveAsTable(f"{schema}.{name}")

    def replace_where(
        self, table: str, condition: str, params: Sequence[Any], rows: pa.Table
    ) -> None:
        # Spark's own tables take no DELETE: the kept rows and the new ones overwrite the table.
        kept = self.spark.sql(f"select * from {table} where not ({condition})", args=list(params))
        columns = kept.columns
        merged = kept.unionByName(self._frame(rows).select(*columns)) if rows.num_rows else kept
        merged = merged.localCheckpoint()  # read fully before the table is overwritten
        merged.write.mode("overwrite").saveAsTable(table)

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        return naive_utc_timestamps(self.spark.sql(sql, args=list(params)).toArrow())


def naive_utc_timestamps(table: pa.Table) -> pa.Table:
    """Spark's timestamps (instants, UTC in this session) as the naive UTC timestamps DuckDB's
    ``timestamp`` columns give, so both engines return the same types and values."""
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            naive = pa.timestamp(field.type.unit)
            table = table.set_column(index, field.with_type(naive), table.column(index).cast(naive))
    return table


def lake_replace_tables(root: str, schema: str, tables: Mapping[str, pa.Table]) -> None:
    """Replace ``{root}/{schema}/{name}/`` with one Parquet file of each table's rows, each
    directory swapped atomically (a local root; ``lake.py`` for the choice on S3)."""
    from orchestration.defs.ingestion.lake import LakeSink, new_run_id

    sink, run_id = LakeSink(root), new_run_id()
    swaps = [sink.stage(f"{schema}/{name}", run_id, table) for name, table in tables.items()]
    for swap in swaps:  # every file written before any table is swapped
        swap()
