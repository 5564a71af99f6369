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
    """Replace the batch's hours in every raw table, in one transaction; return the audit."""
    audit = batch.audit()
    format_audit = batch.format_audit()
    hours = audit.select("partition_hour").to_arrow()
    con.execute("begin transaction")
    try:
        con.register("batch_hours", hours)
        for table, frame in [
            *((t, getattr(batch, a)) for t, a in _TABLES.items()),
            ("raw.ingestion_audit", audit),
            ("raw.ingestion_format_audit", format_audit),
        ]:
            con.execute(
                f"delete from {table} "
                "where partition_hour in (select partition_hour from batch_hours)"
            )
            if frame.height:
                con.register("landing", frame.to_arrow())
                con.execute(f"insert into {table} by name select * from landing")
                con.unregister("landing")
        con.unregister("batch_hours")
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    return audit


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
