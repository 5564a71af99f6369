"""An hour larger than a batch: cut into line-bounded pieces, it routes and lands exactly what
one batch does (rows, duplicates across pieces, quarantine, audit), and a run with a tiny batch
and a low DuckDB memory limit completes, reconciles, and reruns identically.

An object larger than a batch is streamed (``reading.py``): read from S3 in chunks, gunzipped
and decoded incrementally and cut into parts of whole lines, in memory bounded by a chunk and
a part whatever its size; it routes exactly as the same object read whole."""

from __future__ import annotations

import gzip
import io
import json
import random
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import boto3
import duckdb
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance

from orchestration.definitions import build_defs
from orchestration.defs.ingestion import parsing
from orchestration.defs.ingestion.lake import LAKE_TABLES
from orchestration.defs.ingestion.parsing import (
    HourInput,
    S3Object,
    fetch_hours,
    hour_pieces,
    list_hour_objects,
    piece_batches,
    route_hours,
    split_lines,
)
from orchestration.defs.ingestion.reading import (
    CHUNK_BYTES,
    cut_lines,
    decompressed,
    texts,
)
from tests import pipeline_data as data

HOUR = datetime(2026, 10, 5, 8, tzinfo=UTC)


def event(i: int, tokens: int = 5) -> str:
    return json.dumps(
        {
            "event_id": f"e{i}",
            "timestamp": "2026-10-05T08:10:00Z",
            "customer_id": "cust_a",
            "model": "m",
            "status": "success",
            "attempt": 1,
            "input_tokens": tokens,
            "output_tokens": 1,
        }
    )


def objects() -> dict[str, bytes]:
    a = "\n".join([event(1), event(2), "not json", "", event(3), event(1), "\r"]) + "\n\n"
    b = "\n".join([event(2), event(4), event(3, tokens=9), "{}", event(5)])
    frame = pl.DataFrame([json.loads(event(i)) for i in (6, 7, 1, 8)])
    parquet = io.BytesIO()
    frame.write_parquet(parquet)
    return {
        "h/a.jsonl": a.encode(),
        "h/b.jsonl.gz": gzip.compress(b.encode()),
        "h/c.parquet": parquet.getvalue(),
        "h/d.jsonl.gz": b"not gzip",
    }


def hour_input() -> HourInput:
    objs = objects()
    return HourInput(HOUR, [S3Object(k, "e", len(v)) for k, v in objs.items()], list(objs.values()))


FRAMES = ("valid", "duplicates", "quarantine", "objects")


def routed_in_pieces(max_lines: int, max_bytes: int = 10**9) -> dict[str, pl.DataFrame]:
    seen: dict = {}
    batches = [
        route_hours(b, seen=seen) for b in piece_batches([hour_input()], max_lines, max_bytes)
    ]
    assert len(batches) > 1
    out = {f: pl.concat([getattr(b, f) for b in batches]) for f in FRAMES}
    # An object read in several pieces has one row per piece: its lines add up.
    out["objects"] = (
        out["objects"]
        .group_by(
            "partition_hour", "source_key", "etag", "size_bytes", "status", maintain_order=True
        )
        .agg(pl.col("line_count").sum())
    )
    return out


@pytest.mark.parametrize(
    ("max_lines", "max_bytes"), [(1, 10**9), (2, 10**9), (3, 10**9), (10**6, 200)]
)
def test_an_hour_in_many_small_pieces_routes_exactly_as_one_batch(max_lines, max_bytes):
    one = route_hours([hour_input()])
    pieces = routed_in_pieces(max_lines, max_bytes)
    for name in FRAMES:
        expected = getattr(one, name)
        expected = expected.select(pieces[name].columns).sort(pl.all())
        assert pieces[name].sort(pl.all()).equals(expected), name
    # e1 of a.jsonl line 1 is repeated in a.jsonl line 6 and c.parquet; e2, e3 in b.jsonl.gz
    dups = one.duplicates.select(
        "source_key",
        "line_number",
        "event_id",
        "first_source_key",
        "first_line_number",
        "is_conflicting",
    ).rows()
    assert dups == [
        ("h/a.jsonl", 6, "e1", "h/a.jsonl", 1, False),
        ("h/b.jsonl.gz", 1, "e2", "h/a.jsonl", 2, False),
        ("h/b.jsonl.gz", 3, "e3", "h/a.jsonl", 5, True),
        ("h/c.parquet", 3, "e1", "h/a.jsonl", 1, False),
    ]


def test_pieces_number_lines_like_the_whole_object():
    pieces = list(hour_pieces(hour_input(), 2, 10**9))
    assert [(p.opens, p.closes) for p in pieces][0] == (True, False)
    assert [(p.opens, p.closes) for p in pieces][-1] == (False, True)
    quarantine = routed_in_pieces(2)["quarantine"]
    assert (
        quarantine.select("source_key", "line_number", "reason_codes")
        .sort("source_key", "line_number", nulls_last=False)
        .rows()
        == route_hours([hour_input()])
        .quarantine.select("source_key", "line_number", "reason_codes")
        .rows()
    )


RAW_TABLES = tuple(LAKE_TABLES)  # every raw table ingestion writes
HOURS = ("2026-10-05-07:00", "2026-10-05-09:00")


def ingest(tmp_path: Path, bucket: str, name: str) -> dict[str, list[tuple]]:
    warehouse = str(tmp_path / "w.duckdb") if name != "default" else str(tmp_path / "d.duckdb")
    defs = build_defs(bucket=bucket, prefix=data.PREFIX, warehouse_path=warehouse)
    home = tmp_path / f"{name}-home"
    home.mkdir(exist_ok=True)
    result = defs.resolve_job_def("hourly_usage_job").execute_in_process(
        instance=DagsterInstance.local_temp(str(home)),
        asset_selection=[AssetKey("raw_usage_events")],
        tags={
            "dagster/asset_partition_range_start": HOURS[0],
            "dagster/asset_partition_range_end": HOURS[1],
        },
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks if c.check_name == "lines_reconcile"] == [True]
    with duckdb.connect(warehouse, read_only=True) as con:
        tables = {t: con.sql(f"select * from {t} order by all").fetchall() for t in RAW_TABLES}
        staged = con.sql(
            "select count(*) from information_schema.tables where table_schema = 'raw_staging'"
        ).fetchone()[0]
        assert bool(staged) == (name != "default")  # the tiny runs split hours into pieces
        if staged:
            for t in RAW_TABLES:
                left = con.sql(f"select count(*) from {t.replace('raw.', 'raw_staging.')}")
                assert left.fetchone()[0] == 0, t
    return tables


@pytest.mark.slow
def test_a_tiny_batch_and_memory_budget_lands_what_one_batch_lands_and_reruns_identically(
    tmp_path, bucket, monkeypatch
):
    data.upload(boto3.client("s3"), bucket)
    expected = ingest(tmp_path, bucket, "default")
    assert len(expected["raw.usage_events"]) > 3
    monkeypatch.setenv("TOKENBILL_INGEST_BATCH_LINES", "2")
    monkeypatch.setenv("TOKENBILL_INGEST_BATCH_MB", "1")
    monkeypatch.setenv("TOKENBILL_DUCKDB_MEMORY_LIMIT", "64MB")
    first = ingest(tmp_path, bucket, "tiny")
    assert first == expected
    assert ingest(tmp_path, bucket, "tiny-rerun") == expected


# ---------------------------------------------------------------------------------------------
# Streaming an object: the reader's parts


def whole_lines(text: str) -> list[str]:
    return split_lines([text], [0])["raw_line"].to_list()


def streamed_lines(text: str, max_lines: int, max_bytes: int, chunk: int) -> list[str]:
    """The lines of ``text`` given in chunks of ``chunk`` characters, cut into parts."""
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    out: list[str] = []
    for offset, part in cut_lines(chunks, max_lines, max_bytes):
        if offset is None:  # the whole text, one part
            assert out == []
            out += whole_lines(part)
            continue
        assert offset == len(out)  # numbered from the lines before it
        lines = parsing._part_lines(0, part, offset)["raw_line"].to_list()
        assert len(lines) <= max_lines
        assert len(part) <= max_bytes or "\n" not in part  # a longer line is a part alone
        out += lines
    return out


def test_a_text_cut_from_any_chunks_into_any_parts_has_exactly_the_lines_of_the_whole_text():
    rng = random.Random(13)
    pieces = ["a", "bb", "\n", "\n", "\r\n", "xyz\n", "é", '{"k": 1}']
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        max_lines, max_bytes, chunk = rng.randint(1, 5), rng.randint(1, 12), rng.randint(1, 9)
        assert streamed_lines(text, max_lines, max_bytes, chunk) == whole_lines(text), (
            text,
            max_lines,
            max_bytes,
            chunk,
        )
    # A lone newline is no line, whole or streamed; two are two empty lines.
    assert streamed_lines("\n", 1, 1, 1) == [] and streamed_lines("\n\n", 1, 1, 1) == ["", ""]


def test_utf8_decoded_in_chunks_fails_where_and_as_the_whole_text_would():
    rng = random.Random(7)
    alphabet = [0x61, 0x0A, 0xE9, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xEF, 0xBB, 0xBF]
    for _ in range(3000):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        step = rng.randint(1, 5)
        try:
            expected = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            expected = f"error: {exc}"
        try:
            got = "".join(texts([data[i : i + step] for i in range(0, len(data), step)]))
        except UnicodeDecodeError as exc:
            got = f"error: {exc}"
        assert got == expected, (data, step)


def test_gzip_decoded_in_chunks_reads_every_member_and_fails_as_gzip_does():
    data = b'{"a": 1}\n' * 100_000
    multi = gzip.compress(data[:300_001]) + b"\0\0\0" + gzip.compress(data[300_001:])
    chunks = list(decompressed(io.BytesIO(multi), gzipped=True))
    assert b"".join(chunks) == data and max(map(len, chunks)) <= CHUNK_BYTES
    for corrupt in (b"not gzip", gzip.compress(data)[:-20], gzip.compress(data) + b"junk"):
        with pytest.raises(Exception) as whole:
            gzip.decompress(corrupt)
        with pytest.raises(Exception) as streamed:
            b"".join(decompressed(io.BytesIO(corrupt), gzipped=True))
        assert (type(streamed.value), str(streamed.value)) == (type(whole.value), str(whole.value))


def lines_of_events(n: int, seed: int = 1) -> list[str]:
    """``n`` valid, varied events of HOUR (not too compressible: ids and counts random)."""
    rng = random.Random(seed)
    return [
        json.dumps(
            {
                "event_id": f"evt_{i:07d}_{rng.getrandbits(48):012x}",
                "timestamp": f"2026-10-05T08:{i % 60:02d}:{rng.randrange(60):02d}Z",
                "customer_id": f"cus_{rng.randrange(500):04d}",
                "model": rng.choice(["gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-pro"]),
                "feature": rng.choice(["chat", "search", "summarize", "agent"]),
                "input_tokens": rng.randrange(1, 90_000),
                "output_tokens": rng.randrange(1, 4_000),
                "trace_id": f"{rng.getrandbits(128):032x}",
            },
            separators=(",", ":"),
        )
        for i in range(n)
    ]


def parquet_bytes(lines: list[str], row_group_size: int) -> bytes:
    frame = pl.DataFrame([json.loads(line) for line in lines])
    frame = frame.with_columns(
        pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC")
    )
    out = io.BytesIO()
    frame.write_parquet(out, row_group_size=row_group_size)
    return out.getvalue()


def big_hour() -> dict[str, bytes]:
    """An hour whose objects are larger than the tiny batches below: gzip (two members), plain
    and Parquet (several row groups), with duplicates far apart, within and across objects,
    and invalid lines; a gzip corrupt after a valid start; and small objects."""
    events = lines_of_events(6_000)
    a = events[:3_000] + ["not json", "", events[10]] + events[3_000:3_500] + [events[2_990]]
    a_text = "\ufeff" + "\n".join(a) + "\n"
    half = len(a_text.encode()) // 2
    a_bytes = a_text.encode()
    corrupt = gzip.compress("\n".join(events[:2_000]).encode())
    return {
        "h/a.jsonl.gz": gzip.compress(a_bytes[:half]) + gzip.compress(a_bytes[half:]),
        "h/b.jsonl": ("\n".join([events[5], *events[3_500:5_000], "{}"]) + "\r\n").encode(),
        "h/c.parquet": parquet_bytes([events[20], *events[5_000:6_000]], row_group_size=128),
        "h/d.jsonl.gz": corrupt[: len(corrupt) // 2] + b"garbage" * 100 + corrupt[-8:],
        "h/e.jsonl": (events[0] + "\n").encode(),  # small: read whole
        "h/f.jsonl.gz": gzip.compress(b""),
        "h/g.parquet": b"",  # no footer: unreadable
    }


def routed_from_s3(bucket: str, hold_bytes: int, max_lines: int, max_bytes: int):
    client = boto3.client("s3")
    seen: dict = {}
    items = fetch_hours(client, bucket, [(HOUR, "h/")], ahead_bytes=10**9, hold_bytes=hold_bytes)
    routed = [route_hours(b, seen=seen) for b in piece_batches(items, max_lines, max_bytes)]
    out = {f: pl.concat([getattr(b, f) for b in routed]) for f in FRAMES}
    out["objects"] = (
        out["objects"]
        .group_by(
            "partition_hour", "source_key", "etag", "size_bytes", "status", maintain_order=True
        )
        .agg(pl.col("line_count").sum())
    )
    return out, routed


def test_objects_larger_than_a_batch_stream_from_s3_and_route_exactly_as_read_whole(
    bucket, monkeypatch
):
    objs = big_hour()
    client = boto3.client("s3")
    for key, body in objs.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    listed = list_hour_objects(client, bucket, "h/")
    whole = route_hours([HourInput(HOUR, listed, [objs[o.key] for o in listed])])
    monkeypatch.setattr(parsing, "SMALL_OBJECT_BYTES", 1024)  # stream all but e, f, g
    streamed, batches = routed_from_s3(bucket, hold_bytes=0, max_lines=700, max_bytes=100_000)
    assert len(batches) > 10  # a, b, c in many parts
    # A Parquet object read whole is judged by polars, streamed by pyarrow (row group by row
    # group): the same reason, their own words.
    parquet_detail = "the object could not be read (corrupt gzip or Parquet, or not UTF-8): "
    parquet_detail += "cannot read Parquet: "
    read_whole = {name: getattr(whole, name) for name in FRAMES}
    whole.quarantine = whole.quarantine.with_columns(
        pl.when(pl.col("source_key") == "h/g.parquet")
        .then(pl.lit(parquet_detail + "Parquet file size is 0 bytes"))
        .otherwise("reason_detail")
        .alias("reason_detail")
    )
    for name in FRAMES:
        expected = getattr(whole, name).select(streamed[name].columns).sort(pl.all())
        assert streamed[name].sort(pl.all()).equals(expected), name
    # The corrupt gzip is one quarantine row, none of its valid first half routed.
    unreadable = streamed["quarantine"].filter(pl.col("line_number").is_null())
    assert unreadable.select("source_key", "reason_codes", "reason_detail").rows() == [
        (
            "h/d.jsonl.gz",
            ["unreadable_object"],
            "the object could not be read (corrupt gzip or Parquet, or not UTF-8): cannot "
            "gunzip/decode: Compressed file ended before the end-of-stream marker was reached",
        ),
        ("h/g.parquet", ["unreadable_object"], parquet_detail + "Parquet file size is 0 bytes"),
    ]
    assert not streamed["valid"]["source_key"].is_in(["h/d.jsonl.gz"]).any()
    assert streamed["objects"].select("source_key", "line_count").rows() == [
        ("h/a.jsonl.gz", 3_504),
        ("h/b.jsonl", 1_502),
        ("h/c.parquet", 1_001),
        ("h/d.jsonl.gz", 0),
        ("h/e.jsonl", 1),
        ("h/f.jsonl.gz", 0),
        ("h/g.parquet", 0),
    ]
    # events[10] (a line 3003), [2990] (a 3504), [5] (b 1), [20] (c 1), [0] (e 1) are copies.
    dups = streamed["duplicates"].sort("source_key", "line_number")
    assert dups.select(
        "source_key", "line_number", "first_source_key", "first_line_number"
    ).rows() == [
        ("h/a.jsonl.gz", 3_003, "h/a.jsonl.gz", 11),
        ("h/a.jsonl.gz", 3_504, "h/a.jsonl.gz", 2_991),
        ("h/b.jsonl", 1, "h/a.jsonl.gz", 6),
        ("h/c.parquet", 1, "h/a.jsonl.gz", 21),
        ("h/e.jsonl", 1, "h/a.jsonl.gz", 1),
    ]
    # Kept whole when the hour may hold them: what reading them whole routes, in one batch.
    kept, few = routed_from_s3(bucket, hold_bytes=10**9, max_lines=10**6, max_bytes=10**9)
    assert len(few) == 1
    for name in FRAMES:
        expected = read_whole[name].select(kept[name].columns).sort(pl.all())
        assert kept[name].sort(pl.all()).equals(expected), name


def test_an_object_far_larger_than_a_batch_is_read_in_memory_bounded_by_a_chunk_and_a_part(
    s3_endpoint, s3_in_a_child
):
    """moto serves the object from a child process, so what ``tracemalloc`` counts is the
    reader alone (credentials and region come from the session's S3 settings)."""
    events = lines_of_events(120_000)
    text = ("\n".join(events) + "\n").encode()
    body = gzip.compress(text, compresslevel=6)
    client = boto3.client("s3", endpoint_url=s3_in_a_child)
    client.create_bucket(Bucket="big")
    client.put_object(Bucket="big", Key="h/big.jsonl.gz", Body=body)
    del body
    budget = 1024 * 1024
    tracemalloc.start()
    try:
        items = fetch_hours(client, "big", [(HOUR, "h/")], ahead_bytes=budget, hold_bytes=budget)
        lines = parts = 0
        for item in items:
            for piece in hour_pieces(item, max_lines=10**6, max_bytes=budget):
                (dec,) = piece.decode()
                (offset,) = piece.line_offsets
                assert offset == lines and dec.size <= budget
                lines += dec.text.count("\n") + 1
                parts += 1
                del piece, dec
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (lines, parts > 20) == (len(events), True)
    # Decoded, the object is ~28 MB (~6 MB stored). The reader held a few parts (1 MB: the one
    # being cut, the piece's, the text joined to cut them) and chunks (256 KB), never the
    # object, neither decoded nor as stored.
    assert len(text) > 25 * budget
    assert peak < 5 * budget, peak


@pytest.mark.slow
def test_an_object_larger_than_the_memory_budget_lands_exactly_what_reading_it_whole_lands(
    tmp_path, bucket, monkeypatch
):
    """One ~3 MB gzip object (14 MB of text, 60,003 lines) in one hour, through the hourly
    job: with a 1 MB batch, 5,000 lines and DuckDB at 64 MB it is streamed in parts and
    lands what the defaults land (they keep it whole), copies found across parts."""
    events = lines_of_events(60_000, seed=5)
    lines = [*events, events[7], "not json", events[59_000]]
    body = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6)
    assert len(body) > 2.5 * 1024 * 1024
    client = boto3.client("s3")
    big = f"{data.PREFIX}/dt=2026-10-05/hour=08/big.jsonl.gz"
    client.put_object(Bucket=bucket, Key=big, Body=body)
    expected = ingest(tmp_path, bucket, "default")
    monkeypatch.setenv("TOKENBILL_INGEST_BATCH_LINES", "5000")
    monkeypatch.setenv("TOKENBILL_INGEST_BATCH_MB", "1")
    monkeypatch.setenv("TOKENBILL_DUCKDB_MEMORY_LIMIT", "64MB")
    streamed = ingest(tmp_path, bucket, "tiny")
    assert streamed == expected
    # partition_hour, objects, unreadable, lines, valid, duplicates, quarantined, ...
    assert [a[1:7] for a in streamed["raw.ingestion_audit"]] == [
        (0, 0, 0, 0, 0, 0),
        (1, 0, 60_003, 60_000, 2, 1),
        (0, 0, 0, 0, 0, 0),
    ]
    assert [(d[1], d[2], d[5]) for d in streamed["raw.usage_event_duplicates"]] == [
        (big, 60_001, 8),
        (big, 60_003, 59_001),
    ]
    tokens = sum(json.loads(e)["input_tokens"] for e in events)
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.sql("select sum(input_tokens) from raw.usage_events").fetchone()[0] == tokens
