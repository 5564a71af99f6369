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

An hour larger than one batch (``RoutedBatch.split_hours``: more lines than
``TOKENBILL_INGEST_BATCH_LINES`` / ``_MB``) arrives in pieces. Each piece's rows are staged
under the sink's run, ``{root}/_runs/{run id}/{hour}/raw/<table>/piece-N.parquet`` (a name
starting with ``_``: no reader lists it), and the hour is left as it was. The piece that
closes the hour merges the staged pieces by the warehouse's own rule (``landing._close_hours``
in an in-memory DuckDB: an object read in pieces is one ``ingested_objects`` row, its lines
summed; the audits summed) and swaps the hour once, like a whole hour; then its pieces are
removed. A run that dies between pieces leaves its ``_runs/<run id>/`` behind, never read
(delete ``_runs/`` entries older than a day, or let a lifecycle rule expire them on S3); the
hour's re-run stages under its own run id.

Spark reads an ``s3://`` root as ``s3a://`` (hadoop-aws's file system): :func:`spark_path`.
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

from orchestration.defs.ingestion.landing import RAW_DDL, RAW_MIGRATIONS, _close_hours
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


def spark_path(root: str) -> str:
    """The lake root as Spark (Hadoop) names it: ``s3://bucket/prefix`` -> ``s3a://bucket/prefix``
    (hadoop-aws's S3A file system; EMR's EMRFS also reads ``s3://``, open-source Spark does
    not), anything else (a local directory, ``s3a://``, ``abfss://``, ``gs://``) unchanged."""
    if root.startswith("s3://"):
        return "s3a://" + root.removeprefix("s3://")
    return root


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
        self._run_id: str | None = None
        self._pieces = 0

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def __call__(self, batch: RoutedBatch) -> pl.DataFrame:
        """Land the batch; return the audit of the hours it completed (as ``land_batch``):
        its whole hours, and the split hours whose last piece it holds."""
        audit = batch.audit()
        run_id = new_run_id()
        tables = typed_tables(batch)
        split = batch.split_hours
        direct = [h for h in sorted(batch.hours) if h not in split]
        closing = sorted(h for h, (_, closes) in split.items() if closes)
        for hour, (opens, _) in sorted(split.items()):
            if opens:  # what an earlier attempt of this sink left for the hour
                self._drop_pieces(hour)
        for table, rows in tables.items():
            for hour, part in hour_slices(rows, sorted(split)):
                self._put_piece(table, hour, part)
        staged = []
        for table, rows in tables.items():  # every file first...
            for hour, part in hour_slices(rows, direct):
                staged.append(self.stage(hour_path(table, hour), run_id, part))
        finished = []
        for hour in closing:  # (a split hour: its pieces merged, as the warehouse merges them)
            merged = self._merge_pieces(hour)
            staged += [self.stage(hour_path(t, hour), run_id, part) for t, part in merged.items()]
            finished.append(pl.from_arrow(merged["raw.ingestion_audit"]))
        for stage in staged:  # ...then every hour, its audit last
            stage()
        for hour in closing:
            self._drop_pieces(hour)
        landed = audit.filter(pl.col("partition_hour").is_in(direct))
        return pl.concat([landed, *(f.select(landed.columns) for f in finished)])

    # -- the pieces of an hour larger than a batch, staged under the sink's run ---------------
    @property
    def run_id(self) -> str:
        """This sink's run (one ingestion step): its split hours' pieces are staged under
        ``{root}/_runs/{run id}/`` (``_``: no reader lists it)."""
        if self._run_id is None:
            self._run_id = new_run_id()
        return self._run_id

    def _pieces_prefix(self, hour: datetime) -> str:
        return f"_runs/{self.run_id}/{hour:%Y-%m-%dT%H}/"

    def _put_piece(self, table: str, hour: datetime, part: pa.Table) -> None:
        self._pieces += 1
        key = f"{self._pieces_prefix(hour)}{lake_name(table)}/piece-{self._pieces:06d}.parquet"
        if self.is_s3:
            bucket, key = self._s3_key(key)
            self._client().put_object(Bucket=bucket, Key=key, Body=parquet_bytes(part))
            return
        path = Path(self.root) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path, compression="zstd")

    def _read_pieces(self, hour: datetime, table: str) -> list[pa.Table]:
        prefix = f"{self._pieces_prefix(hour)}{lake_name(table)}/"
        if self.is_s3:
            bucket, key = self._s3_key(prefix)
            client = self._client()
            keys = sorted(o["Key"] for o in self._s3_objects(bucket, key))
            return [
                pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=k)["Body"].read()))
                for k in keys
            ]
        return [pq.read_table(p) for p in sorted((Path(self.root) / prefix).glob("piece-*"))]

    def _drop_pieces(self, hour: datetime) -> None:
        prefix = self._pieces_prefix(hour)
        if self.is_s3:
            bucket, key = self._s3_key(prefix)
            self._delete_objects(bucket, [o["Key"] for o in self._s3_objects(bucket, key)])
            return
        shutil.rmtree(Path(self.root) / prefix, ignore_errors=True)
        for parent in ((Path(self.root) / prefix).parent, Path(self.root) / "_runs"):
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()

    def _merge_pieces(self, hour: datetime) -> dict[str, pa.Table]:
        """Every raw table of a split hour from its staged pieces, merged by the warehouse's
        own rule (``landing._close_hours``: objects read in pieces summed, audits summed), in
        an in-memory DuckDB over the raw tables' DDL."""
        con = duckdb.connect()
        try:
            con.execute(RAW_DDL)
            con.execute(RAW_MIGRATIONS)
            con.execute("create schema raw_staging")
            for table in LAKE_TABLES:
                staging = table.replace("raw.", "raw_staging.", 1)
                con.execute(f"create table {staging} as select * from {table} limit 0")
                for piece in self._read_pieces(hour, table):
                    con.register("piece", piece)
                    con.execute(f"insert into {staging} by name select * from piece")
                    con.unregister("piece")
            _close_hours(con, [hour])
            return {
                table: con.execute(
                    f"select * from {table} where partition_hour = ? order by all", [hour]
                ).to_arrow_table()
                for table in LAKE_TABLES
            }
        finally:
            con.close()

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
        bucket, hour_prefix = self._s3_key(f"{relative}/")
        key = f"{hour_prefix}part-{run_id}{PART_SUFFIX}"
        client = self._client()
        client.put_object(Bucket=bucket, Key=key, Body=parquet_bytes(part))

        def switch() -> None:
            old = [o["Key"] for o in self._s3_objects(bucket, hour_prefix) if o["Key"] != key]
            self._delete_objects(bucket, old)

        return switch

    def _s3_key(self, relative: str) -> tuple[str, str]:
        """(bucket, key) of a path relative to an ``s3://bucket/prefix`` root."""
        bucket, _, prefix = self.root.removeprefix("s3://").partition("/")
        return bucket, f"{prefix.strip('/')}/{relative}".lstrip("/")

    def _s3_objects(self, bucket: str, prefix: str) -> list[dict]:
        pages = (
            self._client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return [o for page in pages for o in page.get("Contents", [])]

    def _delete_objects(self, bucket: str, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            self._client().delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]}
            )

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
