"""The engine setting, the Parquet lake sink and the warehouse interface on DuckDB and Spark."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration.defs.ingestion.lake import (
    LAKE_TABLES,
    LakeSink,
    hour_path,
    lake_files,
    lake_name,
    read_lake_table,
    spark_path,
)
from orchestration.defs.ingestion.landing import BackgroundLander, ensure_raw_schema, land_batch
from orchestration.defs.ingestion.parsing import HourInput, S3Object, piece_batches, route_hours
from orchestration.defs.ingestion.resources import IngestionSettings
from orchestration.settings import SettingError, engine_setting
from orchestration.warehouse import DuckDBWarehouse, SparkWarehouse, lake_replace_tables

H7, H8, H9 = (datetime(2026, 10, 5, h) for h in (7, 8, 9))
LINE = (
    '{{"event_id":"{id}","timestamp":"2026-10-05T{h:02d}:00:0{s}Z","customer_id":"c",'
    '"model":"m","input_tokens":{i},"output_tokens":1}}'
)


def hour_input(hour: datetime, key: str, *lines: str) -> HourInput:
    body = ("\n".join(lines) + "\n").encode()
    return HourInput(hour.replace(tzinfo=UTC), [S3Object(key, "etag", len(body))], [body])


def three_hours(input_tokens: int = 5):
    """07:00: two events, one sent twice, one line that is not JSON; 08:00: one event;
    09:00: no objects."""
    return route_hours(three_hours_inputs(input_tokens))


def every_entry(root: Path) -> list[str]:
    """Every file and directory under the lake, hidden ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def rows_by_hour(root: Path, table: str) -> dict[datetime, int]:
    hours = read_lake_table(root, table).column("partition_hour").to_pylist()
    return {h: hours.count(h) for h in sorted(set(hours))}


def test_engine_setting_names_the_engines_and_rejects_others(monkeypatch):
    monkeypatch.delenv("TOKENBILL_ENGINE", raising=False)
    assert engine_setting() == "duckdb"
    assert engine_setting(" Spark ") == "spark"
    with pytest.raises(SettingError) as error:
        IngestionSettings(engine="postgres").lake_sink()
    assert str(error.value) == (
        "TOKENBILL_ENGINE='postgres' is not an engine: set it to duckdb or spark "
        "(duckdb, the default, when unset)"
    )
    assert IngestionSettings(engine="duckdb").lake_sink() is None
    assert IngestionSettings(engine="spark", lake_root="/x/lake").lake_sink().root == "/x/lake"


def test_spark_reads_an_s3_lake_root_through_s3a():
    assert spark_path("s3://tokenbill-lake/prod/lake") == "s3a://tokenbill-lake/prod/lake"
    assert spark_path("s3://bucket") == "s3a://bucket"
    assert spark_path("s3a://bucket/p") == "s3a://bucket/p"
    assert spark_path("/var/lake") == "/var/lake"
    assert spark_path("gs://b/lake") == "gs://b/lake"


def test_a_batch_of_three_hours_lands_one_file_per_table_and_hour(tmp_path):
    root = tmp_path / "lake"
    audit = LakeSink(str(root))(three_hours())

    assert audit.select("partition_hour", "lines_read", "valid_count").rows() == [
        (H7, 4, 2),
        (H8, 1, 1),
        (H9, 0, 0),
    ]
    for table in LAKE_TABLES:
        files = [str(p.parent.relative_to(root)) for p in lake_files(root, table)]
        assert files == [hour_path(table, h) for h in (H7, H8, H9)], table
    assert hour_path("raw.usage_events", H7) == (
        "raw/usage_events/event_date=2026-10-05/event_hour=07"
    )
    assert rows_by_hour(root, "raw.usage_events") == {H7: 2, H8: 1}
    assert rows_by_hour(root, "raw.usage_event_duplicates") == {H7: 1}
    assert rows_by_hour(root, "raw.usage_event_quarantine") == {H7: 1}
    assert rows_by_hour(root, "raw.ingestion_audit") == {H7: 1, H8: 1, H9: 1}
    assert not [e for e in every_entry(root) if "/." in f"/{e}"]  # nothing hidden left


def test_rerunning_an_hour_replaces_it_with_identical_rows_and_no_leftovers(tmp_path):
    root = tmp_path / "lake"
    sink = LakeSink(str(root))
    sink(three_hours())
    first = {t: read_lake_table(root, t) for t in LAKE_TABLES}
    sink(three_hours())
    assert {t: read_lake_table(root, t) for t in LAKE_TABLES} == first
    # Still one part file per table and hour, the second run's.
    assert len([e for e in every_entry(root) if e.endswith(".parquet")]) == 6 * 3
    assert not [e for e in every_entry(root) if "/." in f"/{e}"]


def pieces_of_a_big_hour(input_tokens: int = 5):
    """07:00 in pieces of two lines (its 4 lines: 2 events, a resend of one, a line that is
    not JSON) with 08:00 and 09:00 whole in the batch of the last piece."""
    seen: dict = {}
    inputs = [three_hours_inputs(input_tokens)[0]]
    pieces = list(piece_batches(inputs, 2, 10**9))
    assert len(pieces) == 2
    batches = [route_hours(b, seen=seen) for b in pieces[:-1]]
    last = route_hours(pieces[-1] + three_hours_inputs(input_tokens)[1:], seen=seen)
    return [*batches, last]


def three_hours_inputs(input_tokens: int = 5) -> list[HourInput]:
    return [
        hour_input(
            H7,
            "u/dt=2026-10-05/hour=07/a.jsonl",
            LINE.format(id="a", h=7, s=1, i=input_tokens),
            LINE.format(id="b", h=7, s=2, i=6),
            LINE.format(id="a", h=7, s=1, i=input_tokens),
            "not json",
        ),
        hour_input(H8, "u/dt=2026-10-05/hour=08/a.jsonl", LINE.format(id="c", h=8, s=3, i=7)),
        HourInput(H9.replace(tzinfo=UTC), [], []),
    ]


def test_an_hour_larger_than_a_batch_lands_once_its_last_piece_lands(tmp_path):
    """Each piece is staged under the sink's run; the hour is swapped once, when its last
    piece lands, with exactly the rows of the hour landed whole (and of the warehouse)."""
    root = tmp_path / "lake"
    sink = LakeSink(str(root))
    sink(three_hours(input_tokens=1))  # the hours as an earlier run left them
    before = read_lake_table(root, "raw.usage_events").column("input_tokens").to_pylist()
    first, last = pieces_of_a_big_hour(input_tokens=5)
    assert first.split_hours == {H7: (True, False)}
    assert sink(first).height == 0  # nothing completed yet...
    assert sorted(read_lake_table(root, "raw.usage_events").column("input_tokens").to_pylist()) == (
        sorted(before)
    )  # ...and readers still see the old hour, while the piece waits under the run
    (staged,) = [
        e
        for e in every_entry(root)
        if e.endswith(".parquet") and "_runs/" in e and "usage_events" in e
    ]
    assert staged.startswith(f"_runs/{sink.run_id}/2026-10-05T07/raw/usage_events/piece-")
    audit = sink(last)
    assert audit.select(
        "partition_hour",
        "object_count",
        "lines_read",
        "valid_count",
        "duplicate_count",
        "quarantined_count",
    ).sort("partition_hour").rows() == [
        (H7, 1, 4, 2, 1, 1),
        (H8, 1, 1, 1, 0, 0),
        (H9, 0, 0, 0, 0, 0),
    ]
    whole = tmp_path / "whole"
    LakeSink(str(whole))(three_hours(input_tokens=5))
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_raw_schema(con)
    for batch in pieces_of_a_big_hour(input_tokens=5):
        land_batch(con, batch)
    for table in LAKE_TABLES:
        assert read_lake_table(root, table) == read_lake_table(whole, table), table
        con.register("lake", read_lake_table(root, table))
        assert con.execute("select * from lake order by all").fetchall() == (
            con.execute(f"select * from {table} order by all").fetchall()
        ), table
        con.unregister("lake")
        assert len(lake_files(root, table)) == 3, table  # one file per hour, the pieces merged
    assert not [e for e in every_entry(root) if "_runs" in e or "/." in f"/{e}"]


def test_an_s3_lake_lands_an_hour_in_pieces_and_removes_them(s3_client, bucket):
    sink = LakeSink(f"s3://{bucket}/lake", s3_client)
    for batch in pieces_of_a_big_hour(input_tokens=5):
        sink(batch)
    keys = [
        o["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    assert sorted(k.rsplit("/", 1)[0] for k in keys) == sorted(
        f"lake/{hour_path(t, h)}" for t in LAKE_TABLES for h in (H7, H8, H9)
    )
    key = next(k for k in keys if k.startswith(f"lake/{hour_path('raw.usage_events', H7)}/"))
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert sorted(pq.read_table(io.BytesIO(body)).column("event_id").to_pylist()) == ["a", "b"]
    key = next(k for k in keys if k.startswith(f"lake/{hour_path('raw.ingested_objects', H7)}/"))
    objects = pq.read_table(io.BytesIO(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()))
    assert objects.select(["source_key", "line_count"]).to_pylist() == [
        {"source_key": "u/dt=2026-10-05/hour=07/a.jsonl", "line_count": 4}
    ]


def test_a_crash_between_write_and_swap_leaves_the_old_hour(tmp_path):
    root = tmp_path / "lake"
    sink = LakeSink(str(root))
    sink(three_hours(input_tokens=5))
    # A second run writes its 07:00 file and dies before swapping it in.
    new_rows = pa.Table.from_pylist([], schema=read_lake_table(root, "raw.usage_events").schema)
    sink.stage(hour_path("raw.usage_events", H7), "crashed", new_rows)
    assert any(".event_hour=07.crashed.tmp" in e for e in every_entry(root))
    tokens = read_lake_table(root, "raw.usage_events").column("input_tokens").to_pylist()
    assert sorted(tokens) == [5, 6, 7]  # the old hour, whole
    # The next run of the hour removes the leftover and lands its own rows.
    sink(three_hours(input_tokens=9))
    tokens = read_lake_table(root, "raw.usage_events").column("input_tokens").to_pylist()
    assert sorted(tokens) == [6, 7, 9]
    assert not [e for e in every_entry(root) if "/." in f"/{e}"]


def test_the_lake_holds_exactly_the_rows_and_types_of_the_duckdb_landing(tmp_path):
    batch = three_hours()
    root = tmp_path / "lake"
    LakeSink(str(root))(batch)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_raw_schema(con)
    land_batch(con, batch)
    for table in LAKE_TABLES:
        landed = con.execute(f"select * from {table} order by all").to_arrow_table()
        lake = read_lake_table(root, table)
        assert lake.schema == landed.schema, table
        con.register("lake", lake)
        assert con.execute("select * from lake order by all").fetchall() == (
            con.execute(f"select * from {table} order by all").fetchall()
        ), table
        con.unregister("lake")
    assert con.execute("select count(*) from raw.usage_events").fetchone() == (3,)


def test_the_background_lander_writes_the_lake_instead_of_the_warehouse(tmp_path):
    def no_warehouse():
        raise AssertionError("the warehouse is not opened with the lake sink")

    root = tmp_path / "lake"
    with BackgroundLander(no_warehouse, sink=LakeSink(str(root))) as lander:
        lander.put(three_hours())
    assert [a.height for a in lander.audits] == [3]
    assert rows_by_hour(root, "raw.usage_events") == {H7: 2, H8: 1}


def test_an_s3_lake_keeps_one_object_per_table_and_hour(s3_client, bucket):
    sink = LakeSink(f"s3://{bucket}/lake", s3_client)
    sink(three_hours(input_tokens=5))
    sink(three_hours(input_tokens=9))
    keys = [
        o["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="lake/"
        )
        for o in page.get("Contents", [])
    ]
    assert sorted(k.rsplit("/", 1)[0] for k in keys) == sorted(
        f"lake/{hour_path(t, h)}" for t in LAKE_TABLES for h in (H7, H8, H9)
    )
    key = next(k for k in keys if k.startswith(f"lake/{hour_path('raw.usage_events', H7)}/"))
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert sorted(pq.read_table(io.BytesIO(body)).column("input_tokens").to_pylist()) == [6, 9]


# -- Spark ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    pyspark_sql = pytest.importorskip("pyspark.sql")
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = (
        pyspark_sql.SparkSession.builder.master("local[1]")
        .appName("tokenbill-tests")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield session
    session.stop()


CATALOG = pa.table(
    {
        "price_id": pa.array(["p1", "p2"], pa.string()),
        "tokens": pa.array([1_000, 2_500_000], pa.int64()),
        "unit_price": pa.array([Decimal("0.000001500000"), Decimal("12.5")], pa.decimal128(38, 12)),
        "starts_at": pa.array([datetime(2026, 1, 1), datetime(2026, 10, 5, 7)], pa.timestamp("us")),
    }
)


def round_trip(tables) -> tuple[list[dict], list[dict]]:
    tables.replace_tables("catalog", {"prices": CATALOG})
    tables.replace_where(
        "catalog.prices",
        "starts_at >= ?",
        [datetime(2026, 10, 1)],
        CATALOG.slice(1).set_column(1, "tokens", pa.array([7], pa.int64())),
    )
    read = tables.query(
        "select price_id, tokens, unit_price, starts_at from catalog.prices "
        "where tokens < ? order by price_id",
        [10_000],
    )
    return read.to_pylist(), [f.type for f in read.schema]


@pytest.mark.slow
def test_the_warehouse_interface_agrees_on_duckdb_and_spark(spark):
    duck_rows, duck_types = round_trip(DuckDBWarehouse(duckdb.connect()))
    spark_rows, spark_types = round_trip(SparkWarehouse(spark))
    assert duck_rows == [
        {
            "price_id": "p1",
            "tokens": 1_000,
            "unit_price": Decimal("0.000001500000"),
            "starts_at": datetime(2026, 1, 1),
        },
        {
            "price_id": "p2",
            "tokens": 7,
            "unit_price": Decimal("12.500000000000"),
            "starts_at": datetime(2026, 10, 5, 7),
        },
    ]
    assert spark_rows == duck_rows
    assert (
        spark_types
        == duck_types
        == [
            pa.string(),
            pa.int64(),
            pa.decimal128(38, 12),
            pa.timestamp("us"),
        ]
    )


@pytest.mark.slow
def test_spark_reads_the_lake_as_a_partitioned_table(spark, tmp_path):
    root = tmp_path / "lake"
    LakeSink(str(root))(three_hours())
    events = spark.read.parquet(str(root / lake_name("raw.usage_events")))
    assert sorted(
        (r.event_date.isoformat(), r.event_hour, r.event_id, r.input_tokens)
        for r in events.collect()
    ) == [("2026-10-05", 7, "a", 5), ("2026-10-05", 7, "b", 6), ("2026-10-05", 8, "c", 7)]
    audit = spark.read.parquet(str(root / lake_name("raw.ingestion_audit")))
    assert audit.groupBy().sum("lines_read", "valid_count").first()[:] == (5, 3)


@pytest.mark.slow
def test_spark_sources_over_the_lake_read_each_row_once_and_skip_a_crashed_write(spark, tmp_path):
    """The source tables the dbt project declares on Spark (a Parquet table over
    ``{root}/raw/<table>/``, every file below it): naive UTC hours read as they were written,
    and a crashed run's hidden leftover is not read."""
    root = tmp_path / "lake"
    sink = LakeSink(str(root))
    sink(three_hours())
    schema = read_lake_table(root, "raw.usage_events").schema
    sink.stage(hour_path("raw.usage_events", H7), "crashed", pa.Table.from_pylist([], schema))
    spark.sql("create database if not exists lake_raw")
    for name, columns in {
        "usage_events": "partition_hour timestamp, event_id string, input_tokens bigint",
        "usage_event_quarantine": "partition_hour timestamp, reason_codes array<string>",
    }.items():
        spark.sql(f"drop table if exists lake_raw.{name}")
        spark.sql(
            f"create table lake_raw.{name} ({columns}) using parquet "
            f"options (recursiveFileLookup 'true') location '{root / 'raw' / name}'"
        )
    events = spark.sql("select * from lake_raw.usage_events order by event_id").collect()
    assert [(r.partition_hour, r.event_id, r.input_tokens) for r in events] == [
        (H7, "a", 5),
        (H7, "b", 6),
        (H8, "c", 7),
    ]
    (quarantined,) = spark.sql("select * from lake_raw.usage_event_quarantine").collect()
    assert (quarantined.partition_hour, quarantined.reason_codes) == (H7, ["invalid_json"])


def test_catalog_tables_replace_their_lake_directory_whole(tmp_path):
    root = tmp_path / "lake"
    lake_replace_tables(str(root), "catalog", {"prices": CATALOG.slice(0, 1)})
    lake_replace_tables(str(root), "catalog", {"prices": CATALOG})
    (part,) = lake_files(root, "catalog.prices")
    assert part.parent == root / "catalog" / "prices"
    assert pq.read_table(part).equals(CATALOG)
    assert not [e for e in every_entry(root) if "/." in f"/{e}"]


@pytest.mark.slow
def test_spark_reads_the_catalog_the_lake_holds_with_exact_decimals(spark, tmp_path):
    root = tmp_path / "lake"
    lake_replace_tables(str(root), "catalog", {"prices": CATALOG})
    prices = SparkWarehouse(spark).query(
        f"select * from parquet.`{root / 'catalog' / 'prices'}` order by price_id"
    )
    assert prices.equals(CATALOG)
