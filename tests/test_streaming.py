"""An hour larger than a batch: cut into line-bounded pieces, it routes and lands exactly what
one batch does (rows, duplicates across pieces, quarantine, audit), and a run with a tiny batch
and a low DuckDB memory limit completes, reconciles, and reruns identically."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import boto3
import duckdb
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance

from orchestration.definitions import build_defs
from orchestration.defs.ingestion.lake import LAKE_TABLES
from orchestration.defs.ingestion.parsing import (
    HourInput,
    S3Object,
    hour_pieces,
    piece_batches,
    route_hours,
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
