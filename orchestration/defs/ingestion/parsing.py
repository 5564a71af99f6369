"""From S3 objects to routed lines: valid, duplicate or quarantined. No warehouse I/O here.

Every line read ends in exactly one of the three frames of :class:`HourBatch`; an object
that cannot be read at all becomes one quarantine row with no line number.
"""

from __future__ import annotations

import gzip
import io
import zlib
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
class HourBatch:
    """One hour's input, routed. ``objects`` lists what was read, for the audit and sensor."""

    hour: datetime
    valid: pl.DataFrame
    duplicates: pl.DataFrame
    quarantine: pl.DataFrame
    objects: pl.DataFrame

    @property
    def lines_read(self) -> int:
        return int(self.objects["line_count"].sum() or 0)

    def audit(self) -> dict:
        line_quarantine = self.quarantine.filter(pl.col("line_number").is_not_null()).height
        return {
            "object_count": self.objects.height,
            "unreadable_object_count": self.objects.filter(pl.col("status") != "read").height,
            "lines_read": self.lines_read,
            "valid_count": self.valid.height,
            "duplicate_count": self.duplicates.height,
            "quarantined_count": line_quarantine,
        }


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
    not_objects = lines.select("line_idx").filter(~pl.col("line_idx").is_in(wire["line_idx"]))
    return wire.select("line_idx", *WIRE_FIELDS), not_objects


# ---------------------------------------------------------------------------------------------
# One hour: read, validate, deduplicate


def route_hour(hour: datetime, objects: list[S3Object], bodies: list[bytes]) -> HourBatch:
    """Route every line of one hour's objects to valid, duplicate or quarantine."""
    frames, object_rows, bad_objects = [], [], []
    for obj, body in zip(objects, bodies, strict=True):
        try:
            frame = object_lines(obj.key, body)
        except UnreadableObject as exc:
            object_rows.append((obj.key, obj.etag, obj.size, 0, exc.code))
            bad_objects.append(
                (obj.key, None, None, [exc.code], f"{REASONS[exc.code].what}: {exc.detail}", None)
            )
            continue
        frames.append(frame)
        object_rows.append((obj.key, obj.etag, obj.size, frame.height, "read"))
    lines = pl.concat(frames) if frames else pl.DataFrame(schema=LINES_SCHEMA)

    wire, not_objects = extract_wire_fields(lines)
    wire = wire.with_columns(pl.lit(hour).cast(pl.Datetime("us", "UTC")).alias(SOURCE_HOUR))
    valid, failures = validate_wire_events(wire)

    lines = lines.with_row_index("line_idx")
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
            pl.DataFrame(bad_objects, schema=QUARANTINE_SCHEMA, orient="row"),
        ]
    ).sort("source_key", "line_number", nulls_last=False)

    valid = lines.drop("raw_line").join(valid, on="line_idx").drop("line_idx")
    valid, duplicates = _deduplicate(valid)
    return HourBatch(
        hour=hour,
        valid=valid,
        duplicates=duplicates,
        quarantine=quarantine,
        objects=pl.DataFrame(object_rows, schema=OBJECTS_SCHEMA, orient="row"),
    )


def _quarantine_rows(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
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
    valid = valid.sort("source_key", "line_number").with_columns(
        content_hash=pl.struct(_CONTENT_COLUMNS).hash(seed=0)
    )
    first = pl.col("event_id").is_first_distinct()
    winners = valid.filter(first)
    duplicates = (
        valid.filter(~first)
        .join(
            winners.select(
                "event_id",
                pl.col("source_key").alias("first_source_key"),
                pl.col("line_number").alias("first_line_number"),
                pl.col("content_hash").alias("first_hash"),
            ),
            on="event_id",
        )
        .select(
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
