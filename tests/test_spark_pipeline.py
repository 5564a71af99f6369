"""The hourly job on Spark, end to end: a real Dagster run reading a real S3 server (moto),
landing the hour in the Parquet lake (in pieces: a batch holds 2 lines here) and building its
staging view and hourly mart with dbt-spark; then the lake's rows and the marts' rows, exact.

One Spark start for the build (``create_lake_sources`` and ``dbt build`` share the dbt
process's Spark, child.py), one for the observations the dbt step reads back, one to read the
results here.
"""

from __future__ import annotations

from datetime import datetime

import boto3
import pytest

from orchestration.defs.ingestion.lake import lake_files, read_lake_table
from tests.spark_support import EnginePipeline

pytestmark = pytest.mark.slow
pytest.importorskip("pyspark", reason="the Spark extra: pip install -e '.[spark]'")

H7 = datetime(2026, 10, 5, 7)
LINE = (
    '{{"event_id":"{id}","timestamp":"2026-10-05T07:{m:02d}:00Z","customer_id":"{c}",'
    '"model":"gpt-4o","feature":"chat","input_tokens":{i},"output_tokens":{o}}}'
)
LINES = [
    LINE.format(id="a", m=1, c="acme", i=100, o=10),
    LINE.format(id="b", m=2, c="acme", i=50, o=5),
    LINE.format(id="a", m=1, c="acme", i=100, o=10),  # sent twice: a duplicate
    "not json",  # quarantined
    LINE.format(id="c", m=3, c="globex", i=7, o=1),
]


@pytest.fixture(scope="module")
def spark_hour(tmp_path_factory, s3_endpoint):
    root = tmp_path_factory.mktemp("spark_pipeline")
    bucket = f"tb-{root.name.replace('_', '-').lower()}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    client.put_object(
        Bucket=bucket,
        Key="usage/dt=2026-10-05/hour=07/a.jsonl",
        Body=("\n".join(LINES) + "\n").encode(),
    )
    pipeline = EnginePipeline(root, bucket, "spark", settings={"TOKENBILL_INGEST_BATCH_LINES": "2"})
    result = pipeline.run(
        "hourly_usage_job",
        "2026-10-05-07:00",
        assets=[
            "raw_usage_events",
            "staging/stg_tokenbill__usage_events",
            "marts/fct_token_usage_hourly",
            "analyst_snapshot",
        ],
    )
    assert result.success
    with pipeline.spark() as spark:
        marts = {
            "staging": spark.rows(
                "select event_id, customer_id, input_tokens, output_tokens "
                "from staging.stg_tokenbill__usage_events order by event_id"
            ),
            "hourly": spark.rows(
                "select usage_hour, customer_id, model, feature, event_count, input_tokens, "
                "output_tokens, total_tokens from marts.fct_token_usage_hourly "
                "order by customer_id"
            ),
        }
    return pipeline, result, marts


def test_the_hour_lands_in_the_lake_whole_from_its_pieces(spark_hour):
    pipeline, _, _ = spark_hour
    events = read_lake_table(pipeline.lake, "raw.usage_events")
    assert sorted(events.column("event_id").to_pylist()) == ["a", "b", "c"]
    audit = read_lake_table(pipeline.lake, "raw.ingestion_audit").to_pylist()
    assert [
        (
            a["partition_hour"],
            a["object_count"],
            a["lines_read"],
            a["valid_count"],
            a["duplicate_count"],
            a["quarantined_count"],
        )
        for a in audit
    ] == [(H7, 1, 5, 3, 1, 1)]
    (objects,) = read_lake_table(pipeline.lake, "raw.ingested_objects").to_pylist()
    assert (objects["source_key"], objects["line_count"]) == (
        "usage/dt=2026-10-05/hour=07/a.jsonl",
        5,
    )
    assert len(lake_files(pipeline.lake, "raw.usage_events")) == 1
    assert not list(pipeline.lake.glob("_runs/*"))  # the pieces removed once merged
    assert not (pipeline.lake.parent / "warehouse.duckdb").exists()  # DuckDB never opened


def test_dbt_builds_the_staging_view_and_the_hourly_mart_on_spark(spark_hour):
    _, _, marts = spark_hour
    assert marts["staging"] == [
        ("a", "acme", 100, 10),
        ("b", "acme", 50, 5),
        ("c", "globex", 7, 1),
    ]
    assert marts["hourly"] == [
        (H7, "acme", "gpt-4o", "chat", 2, 150, 15, 165),
        (H7, "globex", "gpt-4o", "chat", 1, 7, 1, 8),
    ]


def test_the_run_observes_the_spark_mart_and_passes_its_checks(spark_hour):
    _, result, _ = spark_hour
    observed = {
        e.asset_key.to_user_string(): e.asset_observation_data.asset_observation.metadata
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    }
    hourly = observed["marts/fct_token_usage_hourly"]
    assert (hourly["dagster/row_count"].value, hourly["rows_in_window"].value) == (2, 2)
    checks = result.get_asset_check_evaluations()
    # 1 line in 5 quarantined is above the 1% warning rate: the one (WARN) check that fails.
    assert [c.check_name for c in checks if not c.passed] == ["quarantine_rate"]
    on_hourly = [c.check_name for c in checks if c.asset_key.path[-1] == "fct_token_usage_hourly"]
    assert on_hourly, "the hourly mart's dbt tests ran as checks"
