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
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import duckdb
import polars as pl
import pyarrow as pa

from contracts.usage_event import (
    NULL_FIELDS,
    REASONS,
    REQUIRED_FIELDS,
    SOURCE_HOUR,
    WIRE_FIELDS,
    validate_wire_events,
)
from orchestration.defs.ingestion.reading import (
    BODY_READ_ERRORS,
    BodyRetry,
    ObjectReadError,
    Spooled,
    cut_lines,
    read_object,
    spool_object,
    texts,
)
from orchestration.defs.ingestion.shapes import MappedLines, map_lines, native_names
from orchestration.settings import SETTINGS
from orchestration.timeutil import naive_utc

QUARANTINE_SCHEMA = {
    "source_key": pl.String,
    "line_number": pl.Int64,
    "event_id": pl.String,
    "reason_codes": pl.List(pl.String),
    "reason_detail": pl.String,
    "raw_line": pl.String,
    "source_format": pl.String,
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
    #: Non-GenAI OTLP spans skipped, per hour (``partition_hour``, ``skipped``).
    skipped: pl.DataFrame
    #: Records per hour and shape, and where they went (``raw.ingestion_format_audit``).
    formats: pl.DataFrame
    #: Hours of which this batch holds one piece (an hour larger than a batch): hour ->
    #: (the piece opens the hour, the piece closes it). They are landed through staging and
    #: replace the hour in the warehouse when it closes.
    split_hours: dict[datetime, tuple[bool, bool]] = field(default_factory=dict)

    def format_audit(self) -> pl.DataFrame:
        return self.formats

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
            per_hour(
                self.quarantine,
                "unreported_usage_count",
                pl.col("reason_codes").list.contains("usage_not_reported"),
            ),
            self.skipped.group_by("partition_hour").agg(
                pl.col("skipped").sum().alias("otlp_spans_skipped")
            ),
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


__all__ = ["BODY_READ_ERRORS", "BodyRetry", "ObjectReadError", "read_object"]  # reading.py's

#: Objects up to this size as stored are read whole into memory (while their hour holds less
#: than a batch of text); larger ones are spooled and decoded in parts (:func:`fetch_hours`).
SMALL_OBJECT_BYTES = 1024 * 1024
#: Object kinds by name, as :func:`reading.spool_object` reads them, and what their decode
#: failure is called in the quarantine (as :func:`decode_object` calls it).
_KINDS = {".jsonl.gz": "gzip", ".jsonl": "text", ".parquet": "parquet"}
_FAILURES = {"gzip": "cannot gunzip/decode", "text": "not UTF-8", "parquet": "cannot read Parquet"}


def _kind(key: str) -> str | None:
    return next((kind for suffix, kind in _KINDS.items() if key.endswith(suffix)), None)


def fetch_hours(
    client,
    bucket: str,
    prefixes: list[tuple[datetime, str]],
    ahead_bytes: int,
    ahead: int = 16,
    retry: BodyRetry = BodyRetry(),  # noqa: B008 - frozen
    hold_bytes: int = 64 * 1024 * 1024,
) -> Iterator[HourInput]:
    """List, fetch and decode hours in order, up to ``ahead`` hours in flight at once.

    Fetching is I/O and gunzip releases the GIL: doing both in the pool overlaps them with
    the routing of earlier hours. The look-ahead also stops at about ``ahead_bytes`` of decoded
    text (judged by the largest hour seen so far, at least two hours), so memory stays at a
    few hours of objects whatever the range and however large its hours.

    An hour holds at most about ``hold_bytes`` of decoded text (give it the batch size): its
    small objects are read whole while it holds less; any other object is read to a spool
    file and decoded to its end as it arrives (:func:`reading.spool_object`), kept if its
    text fits what the hour may still hold, else left in the spool, to be decoded again part
    by part by :func:`hour_pieces` (route the items through :func:`piece_batches`). An object
    that does not decode is known here, before any of its lines is routed, and quarantined
    whole. An object that cannot be read (the network, S3) raises :class:`ObjectReadError`
    in order, and the hours not yet fetched are not.
    """

    def fetch(hour: datetime, prefix: str) -> HourInput:
        objects = list_hour_objects(client, bucket, prefix)
        decoded, held = [], 0
        for obj in objects:
            kind = _kind(obj.key)
            if kind is None:  # unsupported: quarantined by name, never read
                dec = decode_object(obj.key, b"")
            elif obj.size <= SMALL_OBJECT_BYTES and held < hold_bytes:
                dec = decode_object(obj.key, read_object(client, bucket, obj.key, retry))
            else:
                spooled = spool_object(
                    client, bucket, obj.key, kind, retry, keep_bytes=max(0, hold_bytes - held)
                )
                dec = _spooled_object(obj.key, spooled)
            held += dec.size if dec.stream is None else 0
            decoded.append(dec)
        return HourInput(hour, objects, [], decoded)

    largest = 0  # the largest hour yet; until one is seen, two hours in flight
    pool = ThreadPoolExecutor(max_workers=ahead)
    try:
        pending: deque = deque()
        for hour, prefix in prefixes:
            pending.append(pool.submit(fetch, hour, prefix))
            while len(pending) >= (max(2, min(ahead, ahead_bytes // largest)) if largest else 2):
                item = pending.popleft().result()
                largest = max(largest, item.decoded_size, 1)
                yield item
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def batches(inputs: Iterable[HourInput], max_bytes: int) -> Iterator[list[HourInput]]:
    """Group consecutive hours until their decoded text reaches ``max_bytes`` (at least one
    hour): the unit of routing and of one landing transaction."""
    batch: list[HourInput] = []
    size = 0
    for item in inputs:
        batch.append(item)
        size += item.decoded_size
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def piece_batches(
    inputs: Iterable[HourInput], max_lines: int, max_bytes: int
) -> Iterator[list[HourInput]]:
    """Group consecutive hours into batches of at most ``max_lines`` lines / about
    ``max_bytes`` of text; an hour larger than that is cut into pieces (:func:`hour_pieces`),
    one batch each but the last, which later hours may join. Route them with one ``seen``
    dict (:func:`route_hours`) so that duplicates across pieces are found."""
    batch: list[HourInput] = []
    size = lines = 0
    for item in inputs:
        for piece in hour_pieces(item, max_lines, max_bytes):
            n, sz = _line_total(piece.decode()), piece.decoded_size
            if batch and (size + sz > max_bytes or lines + n > max_lines):
                yield batch
                batch, size, lines = [], 0, 0
            batch.append(piece)
            size += sz
            lines += n
            if not piece.closes:
                yield batch
                batch, size, lines = [], 0, 0
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# Object -> text


class UnreadableObject(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class DecodedObject:
    """One object made readable: JSON Lines ``text``, or Parquet ``rows`` re-encoded as JSON
    objects (one per row), or the ``error`` that makes it unreadable; or, for an object
    larger than a batch, its ``stream``: read and checked to decode, its lines still in a
    spool file, which :func:`hour_pieces` cuts into parts (never routed as it is)."""

    text: str | None = None
    rows: pl.Series | None = None
    error: UnreadableObject | None = None
    stream: Spooled | None = None

    @property
    def size(self) -> int:
        if self.text is not None:
            return len(self.text)
        if self.stream is not None:
            return self.stream.size
        return int(self.rows.str.len_bytes().sum()) if self.rows is not None else 0


def decode_object(key: str, body: bytes) -> DecodedObject:
    """Read one object whatever its format; a corrupt or unsupported object is an error value.

    Parquet rows are re-encoded as JSON objects so that every format goes through the same
    extraction and the same contract. Text is UTF-8; a byte-order mark at its start (which
    some Windows tools write) is not part of the first line ("utf-8-sig").
    """
    try:
        if key.endswith(".jsonl.gz"):
            try:
                return DecodedObject(text=gzip.decompress(body).decode("utf-8-sig"))
            except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
                raise UnreadableObject("unreadable_object", f"cannot gunzip/decode: {exc}") from exc
        if key.endswith(".jsonl"):
            return _text_object(body, "text")
        if key.endswith(".parquet"):
            return DecodedObject(rows=_parquet_lines(body))
        raise UnreadableObject(
            "unsupported_format", "name does not end in .jsonl, .jsonl.gz or .parquet"
        )
    except UnreadableObject as exc:
        return DecodedObject(error=exc)


def _spooled_object(key: str, spooled: Spooled) -> DecodedObject:
    """What :func:`decode_object` would make of a spooled object, its text kept or not."""
    if spooled.error is not None:
        detail = f"{_FAILURES[spooled.kind]}: {spooled.error}"
        return DecodedObject(error=UnreadableObject("unreadable_object", detail))
    if spooled.kept is not None:
        try:
            return _text_object(spooled.kept, spooled.kind)
        except UnreadableObject as exc:
            return DecodedObject(error=exc)
    return DecodedObject(stream=spooled)


def _text_object(data: bytes, kind: str) -> DecodedObject:
    """UTF-8 text of an object's (decompressed) bytes; a byte-order mark at its start is not
    part of the first line ("utf-8-sig")."""
    try:
        return DecodedObject(text=data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise UnreadableObject("unreadable_object", f"{_FAILURES[kind]}: {exc}") from exc


def _parquet_lines(body: bytes) -> pl.Series:
    try:
        frame = pl.read_parquet(io.BytesIO(body))
    except Exception as exc:  # polars raises several error types for corrupt files
        raise UnreadableObject("unreadable_object", f"cannot read Parquet: {exc}") from exc
    return _json_rows(frame)


def _json_rows(frame: pl.DataFrame) -> pl.Series:
    """Parquet rows as JSON objects, times as RFC 3339 UTC text (naive ones are UTC)."""
    if frame.height == 0:
        return pl.Series("raw_line", [], dtype=pl.String)
    stamps = [
        pl.col(name).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")
        if dtype.time_zone  # type: ignore[union-attr]
        else pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")  # naive: UTC by convention
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime)
    ]
    frame = frame.with_columns(stamps)
    return frame.select(pl.struct(pl.all()).struct.json_encode().alias("raw_line"))["raw_line"]


def split_lines(texts: list[str], objects: list[int]) -> pl.DataFrame:
    """Numbered lines (1-based) of JSON Lines texts, in one vectorised pass.

    ``objects[i]`` identifies ``texts[i]``; the result has ``obj``, ``line_number`` and
    ``raw_line``. One final newline ends the last line rather than starting an empty one; a
    ``\r`` before a newline is dropped; any other empty line is a line (and invalid JSON).
    """
    frame = pl.DataFrame(
        {"obj": pl.Series(objects, dtype=pl.UInt32), "text": pl.Series(texts, dtype=pl.String)}
    )
    parts = (
        frame.with_columns(pl.col("text").str.strip_suffix("\n"))
        .filter(pl.col("text") != "")
        .select("obj", pl.col("text").str.split("\n").alias("raw_line"))
    )
    return (
        parts.with_columns(
            line_number=pl.int_ranges(1, pl.col("raw_line").list.len() + 1, dtype=pl.Int64)
        )
        .explode("raw_line", "line_number", empty_as_null=False)
        .with_columns(pl.col("raw_line").str.strip_suffix("\r"))
        .select("obj", "line_number", "raw_line")
    )


# ---------------------------------------------------------------------------------------------
# Lines -> wire fields (DuckDB's JSON functions: vectorised, and they keep numbers as text)

_WIRE_STRUCT = (
    "{"
    + ", ".join(f'"{f}": "{"JSON" if f == "metadata" else "VARCHAR"}"' for f in WIRE_FIELDS)
    + "}"
)
_KNOWN_NULLS = "{" + ",".join(f'"{f}":null' for f in WIRE_FIELDS) + "}"
_SENT_NULL = ", ".join(
    f"case when json_type(raw_line, '$.{f}') = 'NULL' then '{f}' end" for f in REQUIRED_FIELDS
)
#: metadata as the contract defines it: the object sent, with unknown top-level fields merged
#: in (JSON merge patch with nulls deletes the known keys: what is left is unknown). Also
#: non-objects, as their JSON text, for validation to reject.
_MERGED_METADATA = f"""case
            when json_type(raw_line, '$.metadata') = 'OBJECT'
                then json_merge_patch(
                    raw_line->'$.metadata', json_merge_patch(raw_line, '{_KNOWN_NULLS}')
                )::varchar
            when json_type(raw_line, '$.metadata') is null
                or json_type(raw_line, '$.metadata') = 'NULL'
                then nullif(json_merge_patch(raw_line, '{_KNOWN_NULLS}')::varchar, '{{}}')
            else (raw_line->'$.metadata')::varchar
        end"""
#: One statement per batch of lines: one ``from_json`` per line into the wire fields (every
#: value as the text it was sent as, numbers included). A line whose keys outnumber its
#: non-null known fields has an unknown field (or an explicit null, or a repeated key): only
#: for those lines (``needs_merge``; a CASE evaluates its branch on its rows alone) is the
#: metadata merged (``_MERGED_METADATA``) and are the required fields sent as an explicit null
#: listed, for the quarantine's wording. Any other line's metadata is exactly what it sent.
_EXTRACT_SQL = f"""
with
objects as (
    select line_idx, raw_line, from_json(raw_line, '{_WIRE_STRUCT}') as w
    from lines
    where json_valid(raw_line) and starts_with(ltrim(raw_line, e' \\t\\r\\n'), '{{')
),
flagged as (
    select
        *,
        len(json_keys(raw_line))
            > {" + ".join(f"(w.{f} is not null)::int" for f in WIRE_FIELDS)} as needs_merge
    from objects
)
select
    line_idx,
    {", ".join(f"w.{f} as {f}" for f in WIRE_FIELDS if f != "metadata")},
    case when needs_merge then {_MERGED_METADATA} else w.metadata::varchar end as metadata,
    case when needs_merge then list_filter([{_SENT_NULL}], lambda f: f is not null) end
        as {NULL_FIELDS}
from flagged
"""
#: Rows per Arrow record batch handed to DuckDB: its scan runs one batch per thread.
_SCAN_ROWS = 50_000
#: DuckDB's memory limit for extraction when the caller gives none (the asset gives the
#: warehouse resource's).
DEFAULT_MEMORY_LIMIT = SETTINGS["TOKENBILL_DUCKDB_MEMORY_LIMIT"][0]


def extract_wire_fields(
    lines: pl.DataFrame, memory_limit: str = DEFAULT_MEMORY_LIMIT
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return ``(wire, not_objects)``: the wire fields of each JSON-object line (with its
    ``line_idx`` into ``lines``, the other columns of ``lines`` but ``raw_line`` and the
    contract's ``NULL_FIELDS``) and the ``line_idx`` of lines that are not JSON objects. Lines
    keep their order."""
    indexed = lines.select("raw_line").with_row_index("line_idx")
    con = duckdb.connect(config={"memory_limit": memory_limit})
    try:
        con.register("lines", _chunked(indexed))
        wire = con.sql(_EXTRACT_SQL).pl()
    finally:
        con.close()
    if not wire["line_idx"].is_sorted():
        wire = wire.sort("line_idx")
    carry = [c for c in lines.columns if c not in ("raw_line", "native_line")]
    carried = lines.select(carry)[wire["line_idx"]] if carry else pl.DataFrame()
    not_objects = indexed.select("line_idx").join(
        wire.select("line_idx"), on="line_idx", how="anti", maintain_order="left"
    )
    return wire.select("line_idx").hstack(
        [*carried.get_columns(), *wire.select(*WIRE_FIELDS, NULL_FIELDS).get_columns()]
    ), not_objects


def _chunked(frame: pl.DataFrame) -> pa.Table:
    table = frame.to_arrow()
    return pa.Table.from_batches(table.to_batches(max_chunksize=_SCAN_ROWS), schema=table.schema)


# ---------------------------------------------------------------------------------------------
# A batch of hours: read, validate, deduplicate -- in one vectorised pass


@dataclass
class HourInput:
    """One hour's objects and their bodies; ``decode`` reads them. :func:`fetch_hours` gives
    them decoded already (``bodies`` empty), an object larger than a batch as a ``stream``
    that only :func:`hour_pieces` reads: what :func:`route_hours` gets is always text, rows or
    an error per object (or per part of one, with ``line_offsets``)."""

    hour: datetime
    objects: list[S3Object]
    bodies: list[bytes]
    decoded: list[DecodedObject] | None = None
    #: A piece of an hour (see :func:`hour_pieces`): lines of ``objects[i]`` before this piece
    #: (None: whole objects), and whether this piece holds the hour's first / last lines.
    line_offsets: list[int | None] | None = None
    opens: bool = True
    closes: bool = True

    def decode(self) -> list[DecodedObject]:
        if self.decoded is None:
            self.decoded = [
                decode_object(o.key, b) for o, b in zip(self.objects, self.bodies, strict=True)
            ]
            self.bodies = []  # the text replaces them; keep memory to one copy
        return self.decoded

    @property
    def size(self) -> int:
        """Bytes of the hour's objects as stored (compressed or not)."""
        return sum(o.size for o in self.objects)

    @cached_property
    def decoded_size(self) -> int:
        return sum(d.size for d in self.decode())


def route_hours(
    inputs: list[HourInput],
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    seen: dict[datetime, pl.DataFrame] | None = None,
) -> RoutedBatch:
    """Route every line of several hours' objects to valid, duplicate or quarantine.

    Hours are independent (deduplication is per hour), so batching them only amortises the
    fixed cost of extraction and validation; the result is the same as hour by hour.
    """
    # Objects are numbered in (hour, key) order: ``obj`` stands for (partition_hour,
    # source_key) in every frame below until the end, and lines stay in (obj, line) order,
    # so nothing needs sorting or joining back.
    object_rows, bad_objects, line_frames = [], [], []
    texts, text_objs = [], []
    for item in inputs:
        hour = naive_utc(item.hour)
        pairs = sorted(zip(item.objects, item.decode(), strict=True), key=lambda p: p[0].key)
        if item.line_offsets is None:
            pairs = [(o, d, None) for o, d in pairs]
        else:  # pieces keep their objects' order, and offsets
            pairs = list(zip(item.objects, item.decode(), item.line_offsets, strict=True))
        for obj, decoded, offset in pairs:
            index = len(object_rows)
            if decoded.error is not None:
                code = decoded.error.code
                object_rows.append((hour, obj.key, obj.etag, obj.size, 0, code))
                detail = f"{REASONS[code].what}: {decoded.error.detail}"
                bad_objects.append((hour, obj.key, None, None, [code], detail, None, None))
                continue
            if decoded.text is not None and offset is None:
                texts.append(decoded.text)
                text_objs.append(index)
            else:
                if texts:
                    line_frames.append(split_lines(texts, text_objs))
                    texts, text_objs = [], []
                if decoded.text is not None:  # a part of an object: whole lines
                    line_frames.append(_part_lines(index, decoded.text, offset))
                else:
                    line_frames.append(_parquet_frame(index, decoded.rows, offset or 0))
            object_rows.append((hour, obj.key, obj.etag, obj.size, 0, "read"))
    if texts or not line_frames:
        line_frames.append(split_lines(texts, text_objs))
    del texts
    lines = pl.concat(line_frames)
    del line_frames
    # Lines -> records (a line in a producer's shape mapped to canonical; an OTLP line to one
    # record per GenAI span), and the lines quarantined for their shape.
    con = duckdb.connect(config={"memory_limit": memory_limit})
    try:
        mapped = map_lines(lines, con)
    finally:
        con.close()
    lines = mapped.records
    # An object's line count is its records (0 for an unreadable object): those the split and
    # the mapping made of it, the ones quarantined for their shape included.
    counts = pl.concat([lines.select("obj"), mapped.rejected.select("obj")]).group_by("obj").len()
    objects = pl.DataFrame(
        object_rows,
        schema={"partition_hour": pl.Datetime("us"), **OBJECTS_SCHEMA},
        orient="row",
    ).with_columns(
        pl.int_range(pl.len(), dtype=pl.UInt32)
        .replace_strict(counts["obj"], counts["len"], default=0, return_dtype=pl.Int64)
        .alias("line_count")
    )
    hour_of = objects["partition_hour"]
    key_of = objects["source_key"]

    wire, not_objects = _wire_of_records(mapped, memory_limit)
    wire = wire.with_columns(
        hour_of.gather(wire["obj"]).dt.replace_time_zone("UTC").alias(SOURCE_HOUR)
    )
    valid, failures = validate_wire_events(wire)

    def located(frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` (with ``obj``) given its hour and object key."""
        return frame.with_columns(
            partition_hour=hour_of.gather(frame["obj"]), source_key=key_of.gather(frame["obj"])
        )

    invalid_json = located(lines[not_objects["line_idx"]]).with_columns(
        event_id=pl.lit(None, pl.String),
        reason_codes=pl.lit(["invalid_json"], pl.List(pl.String)),
        reason_detail=pl.lit(REASONS["invalid_json"].what),
        source_format=pl.lit(None, pl.String),
    )
    failed_wire = wire.select("line_idx", "event_id")[failures["row"]]
    failed = located(
        failed_wire.hstack(
            lines.select(
                "obj",
                "line_number",
                pl.coalesce("native_line", "raw_line").alias("raw_line"),
                "source_format",
            )[failed_wire["line_idx"]]
            .hstack(failures.drop("row"))
            .get_columns()
        )
    ).with_columns(reason_detail=native_names(pl.col("source_format"), pl.col("reason_detail")))
    del wire
    quarantine = pl.concat(
        [
            _quarantine_rows(invalid_json),
            _quarantine_rows(failed),
            _quarantine_rows(located(mapped.rejected)),
            pl.DataFrame(
                bad_objects,
                schema={"partition_hour": pl.Datetime("us"), **QUARANTINE_SCHEMA},
                orient="row",
            ),
        ]
    ).sort("partition_hour", "source_key", "line_number", nulls_last=False)
    del lines

    valid = valid.drop("line_idx").with_columns(partition_hour=hour_of.gather(valid["obj"]))
    valid, earlier = _earlier_copies(valid, seen or {})
    valid, duplicates = _deduplicate(valid)
    duplicates = duplicates.with_columns(first_source_key=key_of.gather(duplicates["first_obj"]))
    if earlier is not None:
        duplicates = pl.concat([duplicates.drop("first_obj"), earlier], how="diagonal").sort(
            "obj", "line_number"
        )
    if seen is not None:
        _remember(seen, inputs, valid, key_of)
    duplicates = duplicates.select(
        "obj",
        "line_number",
        "event_id",
        "first_source_key",
        "first_line_number",
        "is_conflicting",
        "source_format",
    )
    formats = _format_counts(valid, duplicates, quarantine, hour_of)
    duplicates = duplicates.drop("source_format")
    skipped = mapped.skipped.select(
        partition_hour=hour_of.gather(mapped.skipped["obj"]), skipped="skipped"
    )
    return RoutedBatch(
        hours=[naive_utc(i.hour) for i in inputs],
        valid=_with_source(valid, hour_of, key_of),
        duplicates=_with_source(duplicates, hour_of, key_of),
        quarantine=quarantine,
        objects=objects,
        skipped=skipped,
        formats=formats,
        split_hours={
            naive_utc(i.hour): (i.opens, i.closes) for i in inputs if not (i.opens and i.closes)
        },
    )


def _format_counts(
    valid: pl.DataFrame, duplicates: pl.DataFrame, quarantine: pl.DataFrame, hour_of: pl.Series
) -> pl.DataFrame:
    """Records per hour and shape, and where they went. A line that is not JSON, or an
    unreadable object, has no shape: ``unparsed``."""

    def counted(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return frame.group_by("partition_hour", "source_format").agg(pl.len().alias(name))

    keys = ["partition_hour", "source_format"]
    valid = valid.select(hour_of.gather(valid["obj"]).alias("partition_hour"), "source_format")
    duplicates = duplicates.select(
        hour_of.gather(duplicates["obj"]).alias("partition_hour"), "source_format"
    )
    quarantine = quarantine.filter(pl.col("line_number").is_not_null()).select(
        "partition_hour", pl.col("source_format").fill_null("unparsed")
    )
    parts = [
        counted(valid, "valid_count"),
        counted(duplicates, "duplicate_count"),
        counted(quarantine, "quarantined_count"),
    ]
    combined = pl.concat([p.select(keys) for p in parts]).unique()
    for part in parts:
        combined = combined.join(part, on=keys, how="left")
    return (
        combined.fill_null(0)
        .with_columns(pl.exclude(keys).cast(pl.Int64))
        .with_columns(
            records_read=pl.col("valid_count")
            + pl.col("duplicate_count")
            + pl.col("quarantined_count")
        )
        .select(*keys, "records_read", "valid_count", "duplicate_count", "quarantined_count")
        .sort(keys)
    )


def _wire_of_records(
    mapped: MappedLines, memory_limit: str = DEFAULT_MEMORY_LIMIT
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The wire fields of every record, ``line_idx`` its position in ``mapped.records``: those
    mapped from a producer's shape as they are, the others (canonical JSON text) extracted;
    and the ``line_idx`` of the records that are not JSON objects."""
    records = mapped.records
    if not mapped.wired.height:
        return extract_wire_fields(records, memory_limit)
    text = records.with_row_index("rec_idx").filter(pl.col("raw_line").is_not_null())
    extracted, not_objects = extract_wire_fields(text, memory_limit)
    rec_idx = text["rec_idx"]
    carried = [c for c in records.columns if c not in ("raw_line", "native_line")]
    columns = ["line_idx", *carried, *WIRE_FIELDS, NULL_FIELDS]
    wired = mapped.wired.rename({"rec_idx": "line_idx"})
    wired = wired.hstack(records.select(carried)[wired["line_idx"]].get_columns()).with_columns(
        pl.lit(None, pl.List(pl.String)).alias(NULL_FIELDS)
    )
    wire = pl.concat(
        [
            extracted.drop("line_idx").rename({"rec_idx": "line_idx"}).select(columns),
            wired.select(columns),
        ]
    ).sort("line_idx")
    return wire, not_objects.select(rec_idx.gather(not_objects["line_idx"]).alias("line_idx"))


def _parquet_frame(obj: int, rows: pl.Series, offset: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "obj": pl.repeat(obj, len(rows), dtype=pl.UInt32, eager=True),
            "line_number": pl.int_range(
                offset + 1, offset + len(rows) + 1, dtype=pl.Int64, eager=True
            ),
            "raw_line": rows,
        }
    )


def _with_source(frame: pl.DataFrame, hour_of: pl.Series, key_of: pl.Series) -> pl.DataFrame:
    """Replace ``obj`` by (partition_hour, source_key), first."""
    rest = [c for c in frame.columns if c not in ("obj", "partition_hour")]
    return frame.select(
        hour_of.gather(frame["obj"]).alias("partition_hour"),
        key_of.gather(frame["obj"]).alias("source_key"),
        *rest,
    )


def _quarantine_rows(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        "partition_hour",
        "source_key",
        "line_number",
        "event_id",
        "reason_codes",
        "reason_detail",
        pl.col("raw_line").str.slice(0, MAX_RAW_CHARS),
        "source_format",
    )


_CONTENT_COLUMNS = [f if f != "timestamp" else "event_ts" for f in WIRE_FIELDS]


def _deduplicate(valid: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """First occurrence of each event_id wins, in (object key, line number) order, per hour.

    ``valid`` carries ``obj`` (objects numbered in hour then key order) and its hour, and is
    in (obj, line_number) order, as ``route_hours`` keeps every frame: the first row of an
    id is its first occurrence.
    A later copy is a duplicate; ``is_conflicting`` marks a copy whose content differs from
    the winner's (an idempotency key reused for a different event: a producer bug to chase).
    Only rows whose (hour, event_id) repeats are hashed and joined.
    """
    key = pl.struct("partition_hour", "event_id")
    repeated = valid.filter(key.is_duplicated()).with_columns(
        content_hash=pl.struct(_CONTENT_COLUMNS).hash(seed=0)
    )
    first = key.is_first_distinct()
    winners = repeated.filter(first)
    duplicates = (
        repeated.filter(~first)
        .join(
            winners.select(
                "partition_hour",
                "event_id",
                pl.col("obj").alias("first_obj"),
                pl.col("line_number").alias("first_line_number"),
                pl.col("content_hash").alias("first_hash"),
            ),
            on=["partition_hour", "event_id"],
        )
        .select(
            "obj",
            "line_number",
            "event_id",
            "first_obj",
            "first_line_number",
            (pl.col("content_hash") != pl.col("first_hash")).alias("is_conflicting"),
            "source_format",
        )
    )
    return valid.filter(key.is_first_distinct()), duplicates


# ---------------------------------------------------------------------------------------------
# An hour larger than a batch: pieces, and deduplication across them


def hour_pieces(item: HourInput, max_lines: int, max_bytes: int) -> Iterator[HourInput]:
    """Cut one decoded hour into pieces of at most ``max_lines`` lines / about ``max_bytes``
    of text (whole lines; at least one line), objects in key order. Each piece knows the
    lines of its objects before it (``line_offsets``), so line numbers stay the object's,
    and holds at most one part of each object (an object in several parts always spans
    several pieces: landing sums its line counts). An hour that fits is yielded as it is.

    A spooled object (``DecodedObject.stream``) is decoded again here, part by part, as the
    pieces are consumed: memory is a piece and a chunk, not the object."""
    decoded = item.decode()
    pairs = sorted(zip(item.objects, decoded, strict=True), key=lambda p: p[0].key)
    streamed = any(d.stream is not None for d in decoded)
    if not streamed and item.decoded_size <= max_bytes and _line_total(decoded) <= max_lines:
        yield item
        return
    objects: list[S3Object] = []
    parts: list[DecodedObject] = []
    offsets: list[int | None] = []
    lines = size = 0
    first = True

    def piece(closes: bool) -> HourInput:
        nonlocal first, objects, parts, offsets, lines, size
        out = HourInput(item.hour, objects, [], parts, offsets, opens=first, closes=closes)
        first = False
        objects, parts, offsets, lines, size = [], [], [], 0, 0
        return out

    for obj, dec in pairs:
        for offset, part in _object_parts(dec, max_lines, max_bytes):
            n = _line_total([part])
            again = bool(offset) and objects and objects[-1].key == obj.key
            if objects and (lines + n > max_lines or size + part.size > max_bytes or again):
                yield piece(closes=False)
            objects.append(obj)
            parts.append(part)
            offsets.append(offset)
            lines += n
            size += part.size
    yield piece(closes=True)


def _part_lines(obj: int, text: str, offset: int) -> pl.DataFrame:
    """The lines of a part of an object (whole lines, its final newline dropped), numbered
    from ``offset`` + 1; every line counts, an empty one too."""
    raw = pl.Series("raw_line", text.split("\n"), dtype=pl.String).str.strip_suffix("\r")
    return pl.DataFrame(
        {
            "obj": pl.repeat(obj, len(raw), dtype=pl.UInt32, eager=True),
            "line_number": pl.int_range(
                offset + 1, offset + len(raw) + 1, dtype=pl.Int64, eager=True
            ),
            "raw_line": raw,
        }
    )


def _line_total(decoded: list[DecodedObject]) -> int:
    total = 0
    for d in decoded:
        if d.text is not None:
            total += d.text.count("\n") + 1
        elif d.rows is not None:
            total += len(d.rows)
        elif d.stream is not None:
            total += d.stream.lines
    return total


def _object_parts(
    dec: DecodedObject, max_lines: int, max_bytes: int
) -> Iterator[tuple[int | None, DecodedObject]]:
    """(lines before, part) of one object. The first part of a text is its head as it is
    (split like the whole text would be); a later part is whole lines without their final
    newline, numbered from the offset. A spooled object is read from its spool, in parts."""
    if dec.stream is not None:
        yield from _stream_parts(dec.stream, max_lines, max_bytes)
        return
    if dec.error is not None or dec.size <= max_bytes and _line_total([dec]) <= max_lines:
        yield None, dec
        return
    if dec.rows is not None:
        for start in range(0, len(dec.rows), max_lines):
            yield start, DecodedObject(rows=dec.rows.slice(start, max_lines))
        return
    text = dec.text
    offset = pos = 0
    while pos < len(text):
        end = pos
        taken = 0
        while end < len(text) and taken < max_lines and (end - pos < max_bytes or not taken):
            nl = text.find("\n", end)
            end = len(text) if nl < 0 else nl + 1
            taken += 1
        if end >= len(text) and offset == 0:
            yield None, DecodedObject(text=text)
            return
        chunk = text[pos:end]
        yield offset, DecodedObject(text=chunk.removesuffix("\n"))
        offset += taken
        pos = end


def _stream_parts(
    stream: Spooled, max_lines: int, max_bytes: int
) -> Iterator[tuple[int | None, DecodedObject]]:
    """The parts of a spooled object, decoded again from its spool (at least one part: an
    object without lines is still an object read). Its spool is closed once read."""
    if stream.kind != "parquet":
        for offset, text in cut_lines(texts(stream.chunks()), max_lines, max_bytes):
            yield offset, DecodedObject(text=text)
        return
    offset = 0
    for batch in stream.batches(max_lines):
        rows = _json_rows(pl.from_arrow(batch))
        ends = rows.str.len_bytes().cum_sum()
        start = 0
        while start < len(rows):
            below = int(ends[start - 1]) if start else 0
            end = max(start + 1, int(ends.search_sorted(below + max_bytes, side="right")))
            yield offset + start, DecodedObject(rows=rows.slice(start, end - start))
            start = end
        offset += len(rows)
    if not offset:
        yield None, DecodedObject(rows=pl.Series("raw_line", [], dtype=pl.String))


def _earlier_copies(
    valid: pl.DataFrame, seen: dict[datetime, pl.DataFrame]
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Split off the rows whose (hour, event_id) won in an earlier piece of their hour: they
    are duplicates of that first copy (the first occurrence in key, line order still wins)."""
    if not seen or not valid.height:
        return valid, None
    winners = pl.concat(
        [f.with_columns(partition_hour=pl.lit(h, pl.Datetime("us"))) for h, f in seen.items()]
    )
    hashed = valid.with_columns(content_hash=pl.struct(_CONTENT_COLUMNS).hash(seed=0))
    matched = hashed.join(winners, on=["partition_hour", "event_id"], how="semi")
    if not matched.height:
        return valid, None
    earlier = matched.join(winners, on=["partition_hour", "event_id"]).select(
        "obj",
        "line_number",
        "event_id",
        "first_source_key",
        "first_line_number",
        (pl.col("content_hash") != pl.col("first_hash")).alias("is_conflicting"),
        "source_format",
    )
    rest = valid.join(winners, on=["partition_hour", "event_id"], how="anti", maintain_order="left")
    return rest, earlier


def _remember(
    seen: dict[datetime, pl.DataFrame],
    inputs: list[HourInput],
    valid: pl.DataFrame,
    key_of: pl.Series,
) -> None:
    """Keep the winners of the hours that continue in a later piece; forget closed hours."""
    for item in inputs:
        hour = naive_utc(item.hour)
        if item.closes:
            seen.pop(hour, None)
            continue
        won = valid.filter(pl.col("partition_hour") == hour).select(
            "event_id",
            "obj",
            pl.col("line_number").alias("first_line_number"),
            pl.struct(_CONTENT_COLUMNS).hash(seed=0).alias("first_hash"),
        )
        won = won.with_columns(first_source_key=key_of.gather(won["obj"])).drop("obj")
        seen[hour] = pl.concat([seen[hour], won]) if hour in seen else won
