"""From S3 objects to routed lines: valid, duplicate or quarantined. No warehouse I/O here.

Every line read ends in exactly one of the three frames of :class:`RoutedBatch`; an object
that cannot be read at all becomes one quarantine row with no line number.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import polars as pl

from contracts.usage_event import (
    REASONS,
    SOURCE_HOUR,
    WIRE_FIELDS,
    validate_wire_events,
)

LINES_SCHEMA = {"source_key": pl.String, "line_number": pl.Int64, "raw_line": pl.String}
QUARANTINE_SCHEMA = {
    "source_key": pl.String,
    "line_number": pl.Int64,
    "event_id": pl.String,
    "reason_codes": pl.List(pl.String),
    "reason_detail": pl.String,
    "raw_line": pl.String,
}
OBJECTS_SCHEMA = {
    "source_key": pl.String,
    "etag": pl.String,
    "size_bytes": pl.Int64,
    "line_count": pl.Int64,
    "status": pl.String,
}
#: Raw text kept for a quarantined line, enough to diagnose without storing huge payloads.
MAX_RAW_CHARS = 4096


@dataclass(frozen=True)
class S3Object:
    key: str
    etag: str
    size: int


@dataclass
class RoutedBatch:
    """Several hours' input, routed; every frame has a ``partition_hour`` column.

    ``objects`` lists what was read, for the audit and for spotting changed objects later.
    """

    hours: list[datetime]
    valid: pl.DataFrame
    duplicates: pl.DataFrame
    quarantine: pl.DataFrame
    objects: pl.DataFrame

    def audit(self) -> pl.DataFrame:
        """One row per hour of the batch (empty hours included), counting where lines went."""

        def per_hour(frame: pl.DataFrame, name: str, *filters: pl.Expr) -> pl.DataFrame:
            return frame.filter(*filters).group_by("partition_hour").agg(pl.len().alias(name))

        hours = pl.DataFrame(
            {"partition_hour": self.hours}, schema={"partition_hour": pl.Datetime("us")}
        )
        parts = [
            per_hour(self.objects, "object_count"),
            per_hour(self.objects, "unreadable_object_count", pl.col("status") != "read"),
            self.objects.group_by("partition_hour").agg(
                pl.col("line_count").sum().alias("lines_read")
            ),
            per_hour(self.valid, "valid_count"),
            per_hour(self.duplicates, "duplicate_count"),
            per_hour(self.quarantine, "quarantined_count", pl.col("line_number").is_not_null()),
        ]
        for part in parts:
            hours = hours.join(part, on="partition_hour", how="left")
        return hours.fill_null(0).with_columns(pl.exclude("partition_hour").cast(pl.Int64))


# ---------------------------------------------------------------------------------------------
# Listing and fetching


def list_hour_objects(client, bucket: str, prefix: str) -> list[S3Object]:
    """Every object under one hour's prefix, across pages, in key order."""
    found: list[S3Object] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found.append(S3Object(item["Key"], item["ETag"].strip('"'), int(item["Size"])))
    return sorted(found, key=lambda o: o.key)


def fetch_bodies(client, bucket: str, objects: list[S3Object], workers: int = 8) -> list[bytes]:
    def get(obj: S3Object) -> bytes:
        return client.get_object(Bucket=bucket, Key=obj.key)["Body"].read()

    if len(objects) <= 1:
        return [get(o) for o in objects]
    with ThreadPoolExecutor(max_workers=min(workers, len(objects))) as pool:
        return list(pool.map(get, objects))


def fetch_hours(
    client, bucket: str, prefixes: list[tuple[datetime, str]], ahead: int = 16
) -> Iterator[HourInput]:
    """List and fetch hours in order, ``ahead`` hours in flight at once.

    Fetching is I/O: overlapping it hides S3 latency, while the bounded look-ahead keeps
    memory to a few hours of objects whatever the length of the range.
    """

    def fetch(hour: datetime, prefix: str) -> HourInput:
        objects = list_hour_objects(client, bucket, prefix)
        return HourInput(hour, objects, fetch_bodies(client, bucket, objects, workers=1))

    with ThreadPoolExecutor(max_workers=ahead) as pool:
        pending: deque = deque()
        for hour, prefix in prefixes:
            pending.append(pool.submit(fetch, hour, prefix))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def batches(inputs: Iterable[HourInput], max_bytes: int) -> Iterator[list[HourInput]]:
    """Group consecutive hours until their objects reach ``max_bytes`` (at least one hour)."""
    batch: list[HourInput] = []
    size = 0
    for item in inputs:
        batch.append(item)
        size += item.size
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# Object -> lines


class UnreadableObject(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def object_lines(key: str, body: bytes) -> pl.DataFrame:
    """Split one object into numbered text lines (1-based), whatever its format.

    Parquet rows are re-encoded as JSON objects so that every format goes through the same
    extraction and the same contract.
    """
    if key.endswith(".jsonl.gz"):
        try:
            text = gzip.decompress(body).decode("utf-8")
        except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
            raise UnreadableObject("unreadable_object", f"cannot gunzip/decode: {exc}") from exc
        lines = _split_lines(text)
    elif key.endswith(".jsonl"):
        try:
            lines = _split_lines(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise UnreadableObject("unreadable_object", f"not UTF-8: {exc}") from exc
    elif key.endswith(".parquet"):
        lines = _parquet_lines(body)
    else:
        raise UnreadableObject(
            "unsupported_format", "name does not end in .jsonl, .jsonl.gz or .parquet"
        )
    return pl.DataFrame(
        {
            "source_key": pl.Series([key] * len(lines), dtype=pl.String),
            "line_number": pl.int_range(1, len(lines) + 1, eager=True, dtype=pl.Int64),
            "raw_line": lines,
        },
        schema=LINES_SCHEMA,
    )


def _split_lines(text: str) -> pl.Series:
    if text.endswith("\n"):
        text = text[:-1]
    if not text:
        return pl.Series([], dtype=pl.String)
    return pl.Series(text.split("\n"), dtype=pl.String).str.strip_suffix("\r")


def _parquet_lines(body: bytes) -> pl.Series:
    try:
        frame = pl.read_parquet(io.BytesIO(body))
    except Exception as exc:  # polars raises several error types for corrupt files
        raise UnreadableObject("unreadable_object", f"cannot read Parquet: {exc}") from exc
    if frame.height == 0:
        return pl.Series([], dtype=pl.String)
    stamps = [
        pl.col(name).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")
        if dtype.time_zone  # type: ignore[union-attr]
        else pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")  # naive: UTC by convention
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime)
    ]
    frame = frame.with_columns(stamps)
    return frame.select(pl.struct(pl.all()).struct.json_encode().alias("raw_line"))["raw_line"]


# ---------------------------------------------------------------------------------------------
# Lines -> wire fields (DuckDB's JSON functions: vectorised, and they keep numbers as text)

_KNOWN_NULLS = "{" + ",".join(f'"{f}":null' for f in WIRE_FIELDS) + "}"
_EXTRACT_SQL = f"""
with checked as (
    select *, json_valid(raw_line) and json_type(raw_line) = 'OBJECT' as is_object
    from lines
),
objects as (
    select line_idx, raw_line::json as j from checked where is_object
),
extracted as (
    select
        line_idx,
        {", ".join(f"j->>'$.{f}' as {f}" for f in WIRE_FIELDS if f != "metadata")},
        json_type(j, '$.metadata') as metadata_type,
        j->'$.metadata' as metadata_json,
        -- JSON merge patch with nulls deletes the known keys: what is left is unknown.
        json_merge_patch(j, '{_KNOWN_NULLS}') as unknown_fields
    from objects
)
select
    * exclude (metadata_type, metadata_json, unknown_fields),
    case
        when metadata_type = 'OBJECT'
            then json_merge_patch(metadata_json, unknown_fields)::varchar
        when metadata_type is null or metadata_type = 'NULL'
            then nullif(unknown_fields::varchar, '{{}}')
        else metadata_json::varchar
    end as metadata
from extracted
order by line_idx
"""


def extract_wire_fields(lines: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return ``(wire, not_objects)``: the wire fields of each JSON-object line (with its
    ``line_idx`` into ``lines``) and the ``line_idx`` of lines that are not JSON objects."""
    lines = lines.select("raw_line").with_row_index("line_idx")
    con = duckdb.connect()
    try:
        con.register("lines", lines.to_arrow())
        wire = con.sql(_EXTRACT_SQL).pl()
    finally:
        con.close()
    wire = wire.with_columns(pl.col("line_idx").cast(pl.UInt32))
    not_objects = lines.select("line_idx").filter(
        ~pl.col("line_idx").is_in(wire["line_idx"].implode())
    )
    return wire.select("line_idx", *WIRE_FIELDS), not_objects


# ---------------------------------------------------------------------------------------------
# A batch of hours: read, validate, deduplicate -- in one vectorised pass


@dataclass(frozen=True)
class HourInput:
    """One hour's objects and their bodies, as fetched from S3."""

    hour: datetime
    objects: list[S3Object]
    bodies: list[bytes]

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.bodies)


def route_hours(inputs: list[HourInput]) -> RoutedBatch:
    """Route every line of several hours' objects to valid, duplicate or quarantine.

    Hours are independent (deduplication is per hour), so batching them only amortises the
    fixed cost of extraction and validation; the result is the same as hour by hour.
    """
    frames, object_rows, bad_objects = [], [], []
    for item in inputs:
        hour = _naive_utc(item.hour)
        for obj, body in zip(item.objects, item.bodies, strict=True):
            try:
                frame = object_lines(obj.key, body)
            except UnreadableObject as exc:
                object_rows.append((hour, obj.key, obj.etag, obj.size, 0, exc.code))
                detail = f"{REASONS[exc.code].what}: {exc.detail}"
                bad_objects.append((hour, obj.key, None, None, [exc.code], detail, None))
                continue
            frames.append(frame.with_columns(partition_hour=pl.lit(hour)))
            object_rows.append((hour, obj.key, obj.etag, obj.size, frame.height, "read"))
    lines = (
        pl.concat(frames)
        if frames
        else pl.DataFrame(schema={**LINES_SCHEMA, "partition_hour": pl.Datetime("us")})
    )

    wire, not_objects = extract_wire_fields(lines)
    lines = lines.with_row_index("line_idx")
    wire = (
        wire.join(lines.select("line_idx", "partition_hour"), on="line_idx")
        .with_columns(pl.col("partition_hour").dt.replace_time_zone("UTC").alias(SOURCE_HOUR))
        .drop("partition_hour")
    )
    valid, failures = validate_wire_events(wire)

    invalid_json = lines.join(not_objects, on="line_idx").with_columns(
        event_id=pl.lit(None, pl.String),
        reason_codes=pl.lit(["invalid_json"], pl.List(pl.String)),
        reason_detail=pl.lit(REASONS["invalid_json"].what),
    )
    failed = (
        wire.select("line_idx", "event_id")
        .with_row_index("row")
        .with_columns(pl.col("row").cast(pl.Int64))
        .join(failures, on="row")
        .join(lines, on="line_idx")
    )
    quarantine = pl.concat(
        [
            _quarantine_rows(invalid_json),
            _quarantine_rows(failed),
            pl.DataFrame(
                bad_objects,
                schema={"partition_hour": pl.Datetime("us"), **QUARANTINE_SCHEMA},
                orient="row",
            ),
        ]
    ).sort("partition_hour", "source_key", "line_number", nulls_last=False)

    valid = lines.drop("raw_line").join(valid, on="line_idx").drop("line_idx")
    valid, duplicates = _deduplicate(valid)
    return RoutedBatch(
        hours=[_naive_utc(i.hour) for i in inputs],
        valid=valid,
        duplicates=duplicates,
        quarantine=quarantine,
        objects=pl.DataFrame(
            object_rows,
            schema={"partition_hour": pl.Datetime("us"), **OBJECTS_SCHEMA},
            orient="row",
        ),
    )


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _quarantine_rows(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        "partition_hour",
        "source_key",
        "line_number",
        "event_id",
        "reason_codes",
        "reason_detail",
        pl.col("raw_line").str.slice(0, MAX_RAW_CHARS),
    )


_CONTENT_COLUMNS = [f if f != "timestamp" else "event_ts" for f in WIRE_FIELDS]


def _deduplicate(valid: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """First occurrence of each event_id wins, in (object key, line number) order.

    A later copy is a duplicate; ``is_conflicting`` marks a copy whose content differs from
    the winner's (an idempotency key reused for a different event: a producer bug to chase).
    """
    valid = valid.sort("partition_hour", "source_key", "line_number").with_columns(
        content_hash=pl.struct(_CONTENT_COLUMNS).hash(seed=0)
    )
    first = pl.struct("partition_hour", "event_id").is_first_distinct()
    winners = valid.filter(first)
    duplicates = (
        valid.filter(~first)
        .join(
            winners.select(
                "partition_hour",
                "event_id",
                pl.col("source_key").alias("first_source_key"),
                pl.col("line_number").alias("first_line_number"),
                pl.col("content_hash").alias("first_hash"),
            ),
            on=["partition_hour", "event_id"],
        )
        .select(
            "partition_hour",
            "source_key",
            "line_number",
            "event_id",
            "first_source_key",
            "first_line_number",
            (pl.col("content_hash") != pl.col("first_hash")).alias("is_conflicting"),
        )
    )
    return winners.drop("content_hash"), duplicates


def utc_hour(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
