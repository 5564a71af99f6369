"""Warehouse tables written from Python: their column types, declared once.

A table the pipeline writes from polars frames (the ``catalog.*`` tables, the wallet ledger) is
declared as one polars schema (column -> dtype). From it come the frames' types
(:func:`typed_frames`) and, for a table created ahead of its first write, the DDL
(:func:`create_table_ddl`), so columns and types are never written twice. Money is
:data:`MONEY` everywhere: exact decimals with the catalog's price scale, never floats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import duckdb
import polars as pl

from contracts.catalog import PRICE_SCALE

MONEY = pl.Decimal(38, PRICE_SCALE)

Schema = Mapping[str, pl.DataType]


def relation_exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    """Whether the warehouse has a table or view ``schema.name``."""
    return bool(
        con.execute(
            "select count(*) from information_schema.tables where table_schema = ? "
            "and table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )


def typed_frames(
    rows: Mapping[str, list[dict]], schemas: Mapping[str, Schema]
) -> dict[str, pl.DataFrame]:
    """One frame per table of ``schemas``, from its ``rows`` (dicts keyed by column), with
    exactly the schema's columns and types (an empty table keeps them too)."""
    return {
        name: pl.DataFrame(rows[name], schema=schema, orient="row")
        if rows[name]
        else pl.DataFrame(schema=schema)
        for name, schema in schemas.items()
    }


def duckdb_type(dtype: pl.DataType) -> str:
    """The DuckDB column type a polars dtype is stored as."""
    if isinstance(dtype, pl.Decimal):
        return f"decimal({dtype.precision}, {dtype.scale})"
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            raise ValueError(f"store naive UTC datetimes, not {dtype}")
        return "timestamp"
    types = {pl.String: "varchar", pl.Int32: "integer", pl.Int64: "bigint", pl.Boolean: "boolean"}
    for polars_type, name in types.items():
        if dtype == polars_type:
            return name
    raise ValueError(f"no DuckDB type for {dtype}")


def create_table_ddl(table: str, schema: Schema, nullable: Iterable[str] = ()) -> str:
    """``create schema/table if not exists`` for ``schema.table`` with the schema's columns, in
    order, each ``not null`` unless named in ``nullable``."""
    nullable = set(nullable)
    unknown = nullable - set(schema)
    if unknown:
        raise ValueError(f"{table}: nullable columns {sorted(unknown)} are not in the schema")
    columns = ",\n".join(
        f"    {name} {duckdb_type(dtype)}{'' if name in nullable else ' not null'}"
        for name, dtype in schema.items()
    )
    return (
        f"create schema if not exists {table.split('.')[0]};\n"
        f"create table if not exists {table} (\n{columns}\n);\n"
    )
