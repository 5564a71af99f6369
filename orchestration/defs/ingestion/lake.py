"""The Parquet lake raw events land in with ``TOKENBILL_ENGINE=spark``: one hour replaced at once.

The sink takes the same routed batches ``land_batch`` takes (validation, quarantine and the
audit are the same code for both engines) and writes every raw table of every hour as one
Parquet file, in the layout Spark (and dbt's Spark sources) read as a partitioned table::

    {root}/raw/usage_events/event_date=2026-10-05/event_hour=13/part-<run id>.parquet
    {root}/raw/usage_event_duplicates/...   {root}/raw/usage_event_quarantine/...
    {root}/raw/ingested_objects/...         {root}/raw/ingestion_audit/...
    {root}/raw/ingestion_format_audit/...

``{root}/{schema}/{table}/`` is where the dbt project's Spark sources read each raw table
(``macros/portable/lake_sources.sql``: a Parquet table over every file below it; Spark skips
names starting with ``.`` or ``_``).

Columns and types are the DuckDB raw tables' (``RAW_DDL``): each frame goes through those very
tables in an in-memory DuckDB (defaults, ``not null`` and casts applied as ``land_batch``
applies them) and comes back as Arrow, so both engines hold the same rows with the same types.
Every hour of the batch gets a file in every table, an empty one when the hour has no such
rows, so a re-run that finds fewer rows replaces the old ones instead of leaving them.

Replacing an hour, the choice per storage:

* **Local directory** (tests, one machine): the hour's new directory is written beside the
  old one under a hidden name (``.event_hour=13.<run id>.tmp``; Spark and ``lake_files``
  ignore names starting with ``.``), then the two directories are exchanged in one
  ``renameat2(RENAME_EXCHANGE)`` and the old one removed. A reader sees the old hour or the
  new one, never both nor neither; a crash before the exchange leaves the old hour and a
  hidden leftover the next write of the hour removes.
* **S3** (``s3://bucket/prefix``; S3 has no rename): the new object is written under a fresh
  run id, then every other object of the hour is deleted (delete-old-after-write). A reader
  may briefly see both files of the hour; a crash between the two steps leaves them both
  until the hour is re-run, which the failed run calls for. Runs that write the lake are in
  the warehouse pool with dbt, so tokenbill's own readers never see that moment. (A
  ``_current`` pointer would make it atomic, but no Spark or dbt source reads pointers.)

Within a batch every file is written before any hour is swapped, and each hour's audit is
swapped last: an hour whose audit is new has all its tables new.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from orchestration.defs.ingestion.landing import RAW_DDL, RAW_MIGRATIONS
from orchestration.defs.ingestion.parsing import RoutedBatch

#: Raw table -> the RoutedBatch frame it holds (``None``: the audits, computed from it), in
#: the order an hour's files are swapped: the audit last.
LAKE_TABLES: dict[str, str | None] = {
    "raw.usage_events": "valid",
    "raw.usage_event_duplicates": "duplicates",
    "raw.usage_event_quarantine": "quarantine",
    "raw.ingested_objects": "objects",
    "raw.ingestion_format_audit": None,
    "raw.ingestion_audit": None,
}
PART_SUFFIX = ".parquet"


def lake_name(table: str) -> str:
    """``raw.usage_events`` -> ``raw/usage_events``, the table's directory under the root."""
    return table.replace(".", "/")


def hour_path(table: str, hour: datetime) -> str:
    """The hour's partition directory, relative to the root."""
    return f"{lake_name(table)}/event_date={hour:%Y-%m-%d}/event_hour={hour:%H}"


def new_run_id() -> str:
    """Sortable and unique: nanoseconds since the epoch, then random hex."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def typed_tables(batch: RoutedBatch) -> dict[str, pa.Table]:
    """Every raw table's rows of the batch, through the DuckDB tables themselves (RAW_DDL):
    the Arrow a DuckDB warehouse would hold."""
    frames = {table: getattr(batch, attr) if attr else None for table, attr in LAKE_TABLES.items()}
    frames["raw.ingestion_audit"] = batch.audit()
    frames["raw.ingestion_format_audit"] = batch.format_audit()
    con = duckdb.connect()
    try:
        con.execute(RAW_DDL)
        con.execute(RAW_MIGRATIONS)
        tables = {}
        for table, frame in frames.items():
            if frame.height:
                con.register("landing", frame.to_arrow())
                con.execute(f"insert into {table} by name select * from landing")
                con.unregister("landing")
            tables[table] = con.execute(f"select * from {table} order by all").to_arrow_table()
        return tables
    finally:
        con.close()


def hour_slices(table: pa.Table, hours: list[datetime]) -> Iterator[tuple[datetime, pa.Table]]:
    """The rows of each hour (an empty table with the same schema for an hour without any)."""
    column = pl.from_arrow(table.select(["partition_hour"]))["partition_hour"]
    for hour in hours:
        mask = (column == hour).to_arrow()
        yield hour, table.filter(mask)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


class LakeSink:
    """Writes routed batches to the lake under ``root`` (a directory or ``s3://bucket/prefix``);
    called like ``land_batch`` (one batch, returns its audit) by ``BackgroundLander``."""

    def __init__(self, root: str, s3_client=None):
        self.root = root.rstrip("/")
        self._s3 = s3_client

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def __call__(self, batch: RoutedBatch) -> pl.DataFrame:
        if batch.split_hours:
            # Each piece would replace the hour written by the one before: refuse rather than
            # lose lines (the warehouse sink stages pieces; the lake does not yet).
            hours = ", ".join(f"{h:%Y-%m-%d %H:00}" for h in sorted(batch.split_hours))
            raise ValueError(
                f"hour(s) {hours} hold more lines than one batch, which the Parquet lake "
                "(TOKENBILL_ENGINE=spark) cannot land in pieces yet: raise "
                "TOKENBILL_INGEST_BATCH_LINES / TOKENBILL_INGEST_BATCH_MB above the hour's size"
            )
        audit = batch.audit()
        run_id = new_run_id()
        tables = typed_tables(batch)
        hours = sorted(batch.hours)
        staged = []
        for table, rows in tables.items():  # every file first...
            for hour, part in hour_slices(rows, hours):
                staged.append(self.stage(hour_path(table, hour), run_id, part))
        for stage in staged:  # ...then every hour, its audit last
            stage()
        return audit

    # -- local directory: write hidden, exchange atomically ---------------------------------
    def stage(self, relative: str, run_id: str, part: pa.Table) -> Callable[[], None]:
        """Write ``part`` as the next content of the directory ``relative`` (to the root);
        the function returned puts it in place of what the directory holds."""
        if self.is_s3:
            return self._stage_s3(relative, run_id, part)
        final = Path(self.root) / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        for leftover in final.parent.glob(f".{final.name}.*"):
            shutil.rmtree(leftover, ignore_errors=True)  # a crashed run's, never read
        staging = final.parent / f".{final.name}.{run_id}.tmp"
        staging.mkdir()
        pq.write_table(part, staging / f"part-{run_id}{PART_SUFFIX}", compression="zstd")
        return lambda: swap_directory(staging, final)

    # -- S3: write under a fresh run id, then delete the hour's other objects ---------------
    def _stage_s3(self, relative: str, run_id: str, part: pa.Table):
        bucket, _, prefix = self.root.removeprefix("s3://").partition("/")
        hour_prefix = f"{prefix.strip('/')}/{relative}/".lstrip("/")
        key = f"{hour_prefix}part-{run_id}{PART_SUFFIX}"
        client = self._client()
        client.put_object(Bucket=bucket, Key=key, Body=parquet_bytes(part))

        def switch() -> None:
            old = [
                {"Key": o["Key"]}
                for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=hour_prefix
                )
                for o in page.get("Contents", [])
                if o["Key"] != key
            ]
            for start in range(0, len(old), 1000):
                client.delete_objects(Bucket=bucket, Delete={"Objects": old[start : start + 1000]})

        return switch

    def _client(self):
        if self._s3 is None:
            import boto3  # the endpoint and credentials from boto3's chain, as for the events

            self._s3 = boto3.client("s3")
        return self._s3


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def swap_directory(staging: Path, final: Path) -> None:
    """Put ``staging`` in place of ``final``, atomically where Linux allows
    (``renameat2(RENAME_EXCHANGE)``), then remove what ``final`` held."""
    if not final.exists():
        os.rename(staging, final)
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None and (
        renameat2(_AT_FDCWD, bytes(staging), _AT_FDCWD, bytes(final), _RENAME_EXCHANGE) == 0
    ):
        shutil.rmtree(staging)  # now the old hour
        return
    # No exchange (another OS, a file system without it): the old hour moves aside first.
    aside = staging.with_suffix(".old")
    os.rename(final, aside)
    os.rename(staging, final)
    shutil.rmtree(aside)


def lake_files(root: str | Path, table: str) -> list[Path]:
    """The part files of a local lake table that readers see (hidden names skipped)."""
    base = Path(root) / lake_name(table)
    return sorted(
        p
        for p in base.rglob(f"*{PART_SUFFIX}")
        if not any(part.startswith((".", "_")) for part in p.relative_to(base).parts)
    )


def read_lake_table(root: str | Path, table: str) -> pa.Table:
    """Every visible row of a local lake table, without the partition directories' columns."""
    files = lake_files(root, table)
    return pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])
