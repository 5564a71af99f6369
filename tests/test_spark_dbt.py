"""The same dbt project on Apache Spark (issue #16): one fixture builds the project on DuckDB,
copies every source table of that warehouse into a Parquet lake (the layout of SPARK.md), builds
the same models on a local Spark (dbt-spark, session mode, in this process: Spark starts once)
and each test compares one model's rows on both engines exactly (same rows, exact decimals).

What is compared grows with what builds on Spark (SPARK.md, "Status"): today the staging view
and the token-usage marts (hourly, daily, monthly), with their data tests, built over all of
history and then rebuilt incrementally for one month (each engine's window replacement).
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import TimeWindow

from orchestration.defs.dbt.project import DBT_PROJECT_DIR
from tests.dbt_support import dbt_build, landing_tables, query, raw_events

pytestmark = pytest.mark.slow
pyspark = pytest.importorskip("pyspark", reason="the Spark extra: pip install -e '.[spark]'")

# The models built on both engines; each is compared whole.
MODELS = [
    "stg_tokenbill__usage_events",
    "fct_token_usage_hourly",
    "fct_token_usage_daily",
    "fct_token_usage_monthly",
]
SCHEMA = {"stg_tokenbill__usage_events": "staging"}

T0 = datetime(2026, 10, 30, 22)
OCTOBER = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))


def _events():
    """Two customers over a month boundary and a day boundary, every dimension varied, a
    cross-hour resend (dropped on both engines), a long-context call and optional subsets."""
    events = [
        ("acme", T0 + timedelta(minutes=5), 10, {"feature": "chat", "input_tokens": 100}),
        ("acme", T0 + timedelta(minutes=6), 20, {"feature": "chat", "input_tokens": 50}),
        ("acme", T0 + timedelta(hours=1, minutes=1), 7, {"plan": "pro", "status": "failed"}),
        (
            "acme",
            T0 + timedelta(hours=2, minutes=59),
            3,
            {"input_tokens": 250_000, "cached_input_tokens": 1_000, "cache_write_tokens": 9},
        ),
        (
            "globex",
            T0 + timedelta(days=1, hours=3),
            1_000_000_000,
            {"environment": "staging", "reasoning_tokens": 5, "cache_write_5m_tokens": 2},
        ),
        ("globex", T0 + timedelta(days=1, hours=4), 1, {"subscription_id": "s1", "attempt": 2}),
    ]
    frame = raw_events(events)
    # A resend of the first event one hour later, from another object: dropped.
    import polars as pl

    resend = frame.head(1).with_columns(
        pl.col("partition_hour") + timedelta(hours=1),
        pl.lit("k2").alias("source_key"),
    )
    return pl.concat([frame, resend], how="diagonal_relaxed")


def _export_lake(warehouse: str, lake: Path) -> None:
    """Every source table of the DuckDB warehouse as Parquet under lake/{schema}/{table}/
    (SPARK.md): timestamps written as UTC instants (isAdjustedToUTC), as the lake stores them."""
    with duckdb.connect(warehouse, read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables"
            " where table_schema in ('raw', 'catalog', 'wallet') and table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table in tables:
            columns = con.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = ? and table_name = ? order by ordinal_position",
                [schema, table],
            ).fetchall()
            select = ", ".join(
                f'cast("{c}" as timestamptz) as "{c}"' if t == "TIMESTAMP" else f'"{c}"'
                for c, t in columns
            )
            target = lake / schema / table
            target.mkdir(parents=True)
            con.execute(
                f"copy (select {select} from {schema}.{table})"
                f" to '{target / 'part-0.parquet'}' (format parquet)"
            )


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from dbt.cli.main import dbtRunner

    root = tmp_path_factory.mktemp("spark_dbt")
    warehouse = str(root / "warehouse.duckdb")
    landing_tables(warehouse)
    with duckdb.connect(warehouse) as con:
        con.register("rows", _events().to_arrow())
        con.execute("insert into raw.usage_events by name select * from rows")
    for window in (None, OCTOBER):
        duck = dbt_build(warehouse, root / "target-duckdb", window, *MODELS)
        assert duck.returncode == 0, duck.stdout[-3000:]

    lake = root / "lake"
    _export_lake(warehouse, lake)
    spark_warehouse = root / "spark"
    saved = {k: os.environ.get(k) for k in ("TOKENBILL_SPARK_WAREHOUSE", "TZ", "DO_NOT_TRACK")}
    os.environ.update(TOKENBILL_SPARK_WAREHOUSE=str(spark_warehouse), TZ="UTC", DO_NOT_TRACK="1")
    common = ["--target", "spark", "--profiles-dir", str(DBT_PROJECT_DIR)]
    common += ["--project-dir", str(DBT_PROJECT_DIR), "--target-path", str(root / "target-spark")]
    try:
        runner = dbtRunner()
        created = runner.invoke(
            ["run-operation", "create_lake_sources", *common, "--vars", f"lake_root: '{lake}'"]
        )
        assert created.success, created.exception
        # All of history, then October again: the incremental run replaces October's
        # partitions (insert_overwrite) and leaves November's, as DuckDB's delete+insert does.
        window_vars = (
            f"{{window_start: '{OCTOBER.start:%Y-%m-%dT%H:%M:%S}',"
            f" window_end: '{OCTOBER.end:%Y-%m-%dT%H:%M:%S}'}}"
        )
        for extra in ([], ["--vars", window_vars]):
            built = runner.invoke(["build", *common, "--select", *MODELS, *extra])
            failures = [
                f"{r.node.name}: {r.status}: {r.message}"
                for r in (built.result or [])
                if str(r.status) not in ("success", "pass")
            ]
            assert built.success and not failures, failures or built.exception
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
        yield warehouse, spark
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(spark_warehouse, ignore_errors=True)


def _rows(rows) -> list[tuple]:
    return sorted((tuple(r) for r in rows), key=repr)


@pytest.mark.parametrize("model", MODELS)
def test_the_model_has_the_same_rows_on_spark_as_on_duckdb(engines, model):
    warehouse, spark = engines
    relation = f"{SCHEMA.get(model, 'marts')}.{model}"
    duck_columns = [r[0] for r in query(warehouse, f"describe {relation}")]
    frame = spark.table(relation)
    # The same columns; Spark stores a partitioned table's partition column last.
    assert sorted(frame.columns) == sorted(duck_columns)
    columns = ", ".join(duck_columns)
    duck = _rows(query(warehouse, f"select {columns} from {relation}"))
    on_spark = _rows(frame.select(*duck_columns).collect())
    assert duck, f"{model} is empty: the comparison would prove nothing"
    assert on_spark == duck
