"""Writing one routed hour into the warehouse's ``raw`` schema, replacing that hour exactly.

Each hour is replaced in one transaction (delete the partition's rows, insert the new ones),
so a re-run or an overlapping backfill leaves no doubles and no leftovers.
"""

from __future__ import annotations

import duckdb
import polars as pl

from orchestration.defs.ingestion.parsing import HourBatch

RAW_DDL = """
create schema if not exists raw;
create table if not exists raw.usage_events (
    partition_hour timestamp not null,
    source_key varchar not null,
    line_number bigint not null,
    event_id varchar not null,
    event_ts timestamp not null,
    customer_id varchar not null,
    subscription_id varchar,
    plan varchar,
    feature varchar,
    provider varchar,
    model varchar not null,
    environment varchar,
    region varchar,
    status varchar not null,
    attempt bigint not null,
    request_group_id varchar,
    trace_id varchar,
    input_tokens bigint not null,
    cached_input_tokens bigint,
    cache_write_tokens bigint,
    output_tokens bigint not null,
    reasoning_tokens bigint,
    metadata varchar
);
create table if not exists raw.usage_event_duplicates (
    partition_hour timestamp not null,
    source_key varchar not null,
    line_number bigint not null,
    event_id varchar not null,
    first_source_key varchar not null,
    first_line_number bigint not null,
    is_conflicting boolean not null
);
create table if not exists raw.usage_event_quarantine (
    partition_hour timestamp not null,
    source_key varchar not null,
    line_number bigint,
    event_id varchar,
    reason_codes varchar[] not null,
    reason_detail varchar not null,
    raw_line varchar
);
create table if not exists raw.ingested_objects (
    partition_hour timestamp not null,
    source_key varchar not null,
    etag varchar not null,
    size_bytes bigint not null,
    line_count bigint not null,
    status varchar not null
);
create table if not exists raw.ingestion_audit (
    partition_hour timestamp primary key,
    object_count bigint not null,
    unreadable_object_count bigint not null,
    lines_read bigint not null,
    valid_count bigint not null,
    duplicate_count bigint not null,
    quarantined_count bigint not null
);
"""

#: table -> HourBatch attribute
_TABLES = {
    "raw.usage_events": "valid",
    "raw.usage_event_duplicates": "duplicates",
    "raw.usage_event_quarantine": "quarantine",
    "raw.ingested_objects": "objects",
}


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(RAW_DDL)


def land_hour(con: duckdb.DuckDBPyConnection, batch: HourBatch) -> dict:
    """Replace ``batch.hour``'s rows in every raw table; return its audit row."""
    hour = batch.hour.replace(tzinfo=None)
    audit = {"partition_hour": hour, **batch.audit()}
    con.execute("begin transaction")
    try:
        for table, attr in _TABLES.items():
            con.execute(f"delete from {table} where partition_hour = ?", [hour])
            frame: pl.DataFrame = getattr(batch, attr)
            if frame.height:
                arrow = frame.with_columns(partition_hour=pl.lit(hour)).to_arrow()
                con.register("landing", arrow)
                con.execute(f"insert into {table} by name select * from landing")
                con.unregister("landing")
        con.execute("delete from raw.ingestion_audit where partition_hour = ?", [hour])
        con.execute(
            "insert into raw.ingestion_audit values (?, ?, ?, ?, ?, ?, ?)",
            [
                hour,
                audit["object_count"],
                audit["unreadable_object_count"],
                audit["lines_read"],
                audit["valid_count"],
                audit["duplicate_count"],
                audit["quarantined_count"],
            ],
        )
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    return audit
