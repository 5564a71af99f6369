"""Writing routed hours into the warehouse's ``raw`` schema, replacing those hours exactly.

A batch of hours is replaced in one transaction (delete the partition's rows, insert the new ones),
so a re-run or an overlapping backfill leaves no doubles and no leftovers.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import duckdb
import polars as pl

from orchestration.defs.ingestion.parsing import RoutedBatch

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
    cache_write_5m_tokens bigint,
    cache_write_1h_tokens bigint,
    audio_input_tokens bigint,
    image_input_tokens bigint,
    audio_output_tokens bigint,
    image_output_tokens bigint,
    metadata varchar,
    source_format varchar not null default 'canonical'
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
    raw_line varchar,
    source_format varchar
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
    quarantined_count bigint not null,
    unreported_usage_count bigint not null,
    otlp_spans_skipped bigint not null
);
create table if not exists raw.ingestion_format_audit (
    partition_hour timestamp not null,
    source_format varchar not null,
    records_read bigint not null,
    valid_count bigint not null,
    duplicate_count bigint not null,
    quarantined_count bigint not null
);
"""
#: Columns added by issue #14 (producer shapes), for warehouses created before it.
RAW_MIGRATIONS = """
alter table raw.usage_events add column if not exists cache_write_5m_tokens bigint;
alter table raw.usage_events add column if not exists cache_write_1h_tokens bigint;
alter table raw.usage_events add column if not exists audio_input_tokens bigint;
alter table raw.usage_events add column if not exists image_input_tokens bigint;
alter table raw.usage_events add column if not exists audio_output_tokens bigint;
alter table raw.usage_events add column if not exists image_output_tokens bigint;
alter table raw.usage_events add column if not exists source_format varchar default 'canonical';
alter table raw.usage_event_quarantine add column if not exists source_format varchar;
alter table raw.ingestion_audit add column if not exists unreported_usage_count bigint default 0;
alter table raw.ingestion_audit add column if not exists otlp_spans_skipped bigint default 0;
"""

#: table -> RoutedBatch attribute
_TABLES = {
    "raw.usage_events": "valid",
    "raw.usage_event_duplicates": "duplicates",
    "raw.usage_event_quarantine": "quarantine",
    "raw.ingested_objects": "objects",
}


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(RAW_DDL)
    con.execute(RAW_MIGRATIONS)


def land_batch(con: duckdb.DuckDBPyConnection, batch: RoutedBatch) -> pl.DataFrame:
    """Replace the batch's hours in every raw table, in one transaction; return the audit of
    the hours it completed.

    A piece of an hour larger than a batch (``batch.split_hours``) is appended to the
    ``raw_staging`` tables instead (its first piece clears what a failed run left there); the
    piece that closes the hour replaces the hour in the raw tables from staging, in the same
    transaction, so readers see the old hour or the whole new one, never a part.
    """
    audit = batch.audit()
    format_audit = batch.format_audit()
    split = batch.split_hours
    hour_col = pl.col("partition_hour")
    direct_hours = audit.filter(~hour_col.is_in(list(split))).select("partition_hour")
    opening = [h for h, (opens, _) in split.items() if opens]
    closing = [h for h, (_, closes) in split.items() if closes]
    tables = [
        *((t, getattr(batch, a)) for t, a in _TABLES.items()),
        ("raw.ingestion_audit", audit),
        ("raw.ingestion_format_audit", format_audit),
    ]
    con.execute("begin transaction")
    try:
        con.register("batch_hours", direct_hours.to_arrow())
        for table, frame in tables:
            con.execute(
                f"delete from {table} "
                "where partition_hour in (select partition_hour from batch_hours)"
            )
            rows = frame.filter(~hour_col.is_in(list(split))) if split else frame
            if rows.height:
                con.register("landing", rows.to_arrow())
                con.execute(f"insert into {table} by name select * from landing")
                con.unregister("landing")
        con.unregister("batch_hours")
        if split:
            _stage(con, tables, split, opening)
        finished = _close_hours(con, closing) if closing else None
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    landed = audit.filter(hour_col.is_in(direct_hours["partition_hour"].implode()))
    return pl.concat([landed, finished.select(landed.columns)]) if finished is not None else landed


def _staging(table: str) -> str:
    return table.replace("raw.", "raw_staging.", 1)


def _stage(con, tables, split: dict, opening: list) -> None:
    con.execute("create schema if not exists raw_staging")
    con.register("opening_hours", pl.DataFrame({"partition_hour": opening}).to_arrow())
    for table, frame in tables:
        staged = _staging(table)
        con.execute(f"create table if not exists {staged} as select * from {table} limit 0")
        if opening:
            con.execute(
                f"delete from {staged} "
                "where partition_hour in (select partition_hour from opening_hours)"
            )
        rows = frame.filter(pl.col("partition_hour").is_in(list(split)))
        if rows.height:
            con.register("landing", rows.to_arrow())
            con.execute(f"insert into {staged} by name select * from landing")
            con.unregister("landing")
    con.unregister("opening_hours")


#: The audit's counts, summed over the pieces of an hour larger than a batch.
AUDIT_COUNTS = (
    "lines_read",
    "valid_count",
    "duplicate_count",
    "quarantined_count",
    "unreported_usage_count",
    "otlp_spans_skipped",
)


def _close_hours(con, closing: list) -> pl.DataFrame:
    """Replace the closing hours in the raw tables by their staged pieces; their audit."""
    con.register("closing_hours", pl.DataFrame({"partition_hour": closing}).to_arrow())
    where = "where partition_hour in (select partition_hour from closing_hours)"
    for table in (*_TABLES, "raw.ingestion_audit", "raw.ingestion_format_audit"):
        con.execute(f"delete from {table} {where}")
    for table in ("raw.usage_events", "raw.usage_event_duplicates", "raw.usage_event_quarantine"):
        con.execute(f"insert into {table} by name select * from {_staging(table)} {where}")
    # An object read in several pieces is one object: its lines summed.
    con.execute(
        "insert into raw.ingested_objects by name "
        "select partition_hour, source_key, etag, size_bytes, sum(line_count)::bigint "
        "as line_count, max(status) as status "
        f"from raw_staging.ingested_objects {where} "
        "group by all order by partition_hour, source_key"
    )
    con.execute(
        "insert into raw.ingestion_format_audit by name "
        "select partition_hour, source_format, "
        + ", ".join(
            f"sum({c})::bigint as {c}"
            for c in ("records_read", "valid_count", "duplicate_count", "quarantined_count")
        )
        + f" from raw_staging.ingestion_format_audit {where} group by all"
    )
    con.execute(
        "insert into raw.ingestion_audit by name "
        "select a.partition_hour, o.object_count, o.unreadable_object_count, "
        + ", ".join(f"a.{c}" for c in AUDIT_COUNTS)
        + " from (select partition_hour, "
        + ", ".join(f"sum({c})::bigint as {c}" for c in AUDIT_COUNTS)
        + f" from raw_staging.ingestion_audit {where} group by all) a "
        "join (select partition_hour, count(*)::bigint as object_count, "
        "count(*) filter (where status != 'read')::bigint as unreadable_object_count "
        f"from raw.ingested_objects {where} group by all) o using (partition_hour)"
    )
    finished = con.sql(f"select * from raw.ingestion_audit {where} order by 1").pl()
    for table in (*_TABLES, "raw.ingestion_audit", "raw.ingestion_format_audit"):
        con.execute(f"delete from {_staging(table)} {where}")
    con.unregister("closing_hours")
    return finished


class BackgroundLander:
    """Lands routed batches on a thread of its own, one at a time and in order, so that the
    next batch is routed while the previous one is written.

    Routing (DuckDB's JSON functions, polars) and landing (DuckDB compressing row groups) both
    release the GIL: overlapped, they keep both cores busy. ``put`` waits while a batch is
    still landing and another one is waiting, so at most two routed batches are held. A
    landing error is raised by the next ``put`` or on leaving the block; what had landed stays
    landed (each batch is its own transaction) and a re-run replaces it.

    ``connect`` opens the warehouse for writing; it is called for each batch and the
    connection closed once the batch is committed. DuckDB's write lock (one process per file)
    is thus held only while a batch is written, never while S3 is read or lines are parsed:
    analysts, the late-data sensor and other processes open the file in between.
    """

    def __init__(
        self,
        connect: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
        sink: Callable[[RoutedBatch], pl.DataFrame] | None = None,
    ):
        self._connect = connect
        self._sink = sink  # instead of the warehouse, e.g. the Parquet lake (lake.py)
        self._queue: queue.Queue[RoutedBatch | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self.audits: list[pl.DataFrame] = []
        self._thread = threading.Thread(target=self._run, name="tokenbill-lander", daemon=True)

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    if self._sink is not None:
                        audit = self._sink(batch)
                    else:
                        with self._connect() as con:
                            ensure_raw_schema(con)
                            audit = land_batch(con, batch)
                    self.audits.append(audit)  # committed and the file released
                except BaseException as exc:  # re-raised in the routing thread
                    self._error = exc
            del batch

    def put(self, batch: RoutedBatch) -> None:
        self._raise_if_failed()
        self._queue.put(batch)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundLander:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc[0] is None:
            self._raise_if_failed()
