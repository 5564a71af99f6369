"""Ingestion over a real, unreliable network: a fault-injecting proxy between boto3 and moto.

The hourly job reads the hand-made data set (``pipeline_data.py``) through
:class:`tests.fault_proxy.FaultProxy`: throttling, server errors and connections reset before
and during bodies are retried and land exactly what a clean run lands; faults that persist
fail the run in one line naming the object and the endpoint; a body cut mid-stream resumes
from the byte reached (and fails, in one line, if the object was rewritten meanwhile); and the
warehouse is free for other processes while S3 is being read.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import boto3
import duckdb
import pytest
from dagster import AssetKey, DagsterInstance

from orchestration.definitions import build_defs
from tests import pipeline_data as data
from tests.fault_proxy import FaultProxy

# Hourly runs through a fault-injecting proxy, with retries and backoff.
pytestmark = pytest.mark.slow

HOURS = ("2026-10-05-07:00", "2026-10-05-08:00")
RAW_TABLES = (
    "raw.usage_events",
    "raw.usage_event_duplicates",
    "raw.usage_event_quarantine",
    "raw.ingested_objects",
    "raw.ingestion_audit",
)


def moto_endpoint() -> str:
    """moto's endpoint (the session fixture sets it), before boto3 is pointed at a proxy."""
    return os.environ["AWS_ENDPOINT_URL_S3"]


def key(name: str) -> str:
    return f"{data.PREFIX}/{name}"


def listing(bucket: str, hour_prefix: str) -> str:
    """The target of boto3's ListObjectsV2 for one hour's prefix, as the proxy sees it."""
    return f"/{bucket}?list-type=2&prefix={data.PREFIX}/{hour_prefix}&encoding-type=url"


@pytest.fixture
def uploaded(bucket: str) -> str:
    data.upload(boto3.client("s3"), bucket)
    return bucket


def ingest(tmp_path: Path, bucket: str, name: str, raise_on_error: bool = True):
    """One run of hourly_usage_job's ingestion over HOURS, on a warehouse of its own."""
    warehouse = str(tmp_path / f"{name}.duckdb")
    defs = build_defs(bucket=bucket, prefix=data.PREFIX, warehouse_path=warehouse)
    home = tmp_path / f"{name}-home"
    home.mkdir(exist_ok=True)
    instance = DagsterInstance.local_temp(str(home))
    result = defs.resolve_job_def("hourly_usage_job").execute_in_process(
        instance=instance,
        asset_selection=[AssetKey("raw_usage_events")],
        tags={
            "dagster/asset_partition_range_start": HOURS[0],
            "dagster/asset_partition_range_end": HOURS[1],
        },
        raise_on_error=raise_on_error,
    )
    return result, warehouse, instance


def tables(warehouse: str) -> dict[str, list[tuple]]:
    with duckdb.connect(warehouse, read_only=True) as con:
        return {t: con.sql(f"select * from {t} order by all").fetchall() for t in RAW_TABLES}


def test_a_flaky_network_is_retried_and_lands_what_a_clean_run_lands(
    tmp_path, uploaded, monkeypatch
):
    _, clean_warehouse, _ = ingest(tmp_path, uploaded, "clean")
    # Every kind of fault, on requests and on bodies, for listings and objects.
    faults = {
        ("GET", listing(uploaded, "dt=2026-10-05/hour=07/")): ["slowdown"],
        ("GET", listing(uploaded, "dt=2026-10-05/hour=08/")): ["internal", "reset"],
        ("GET", f"/{uploaded}/{key('dt=2026-10-05/hour=07/a.jsonl')}"): [
            "reset_body",
            "slowdown",
            "reset_body",
        ],
        ("GET", f"/{uploaded}/{key('dt=2026-10-05/hour=07/b.jsonl.gz')}"): [
            "reset",
            "reset_body",
            "internal",
        ],
        ("GET", f"/{uploaded}/{key('dt=2026-10-05/hour=08/c.parquet')}"): ["reset_body"],
    }

    def schedule(method: str, target: str, n: int) -> str | None:
        planned = faults.get((method, target), [])
        return planned[n - 1] if n <= len(planned) else None

    with FaultProxy(moto_endpoint(), schedule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result, warehouse, instance = ingest(tmp_path, uploaded, "flaky")

    assert result.success
    assert proxy.injected == {"slowdown": 2, "internal": 2, "reset": 2, "reset_body": 4}
    # Each faulted request was sent again until it got through, and no more.
    assert {k: proxy.seen[k] for k in faults} == {k: len(v) + 1 for k, v in faults.items()}
    assert tables(warehouse) == tables(clean_warehouse)
    assert [row[3] for row in tables(warehouse)["raw.ingestion_audit"]] == [10, 2]

    lines = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if e.user_message.startswith("ingestion: ")
    ]
    final = lines[-1]
    assert final.startswith(
        "ingestion: 2/2 hours landed (2026-10-05 07:00 to 2026-10-05 08:00 UTC); "
        "12 events read: 7 valid, 1 duplicates, 4 quarantined, 2 unreadable objects; "
    )
    assert final.endswith(" s") and " events/s over " in final


def test_a_body_that_keeps_breaking_fails_the_run_in_one_line_naming_object_and_endpoint(
    tmp_path, uploaded, monkeypatch
):
    broken = key("dt=2026-10-05/hour=07/a.jsonl")

    def schedule(method: str, target: str, n: int) -> str | None:
        return "reset_body" if target == f"/{uploaded}/{broken}" else None

    with FaultProxy(moto_endpoint(), schedule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result, warehouse, _ = ingest(tmp_path, uploaded, "broken", raise_on_error=False)

    assert not result.success
    # Five attempts at the body (the resource's body_read_attempts), then the run fails.
    assert proxy.seen[("GET", f"/{uploaded}/{broken}")] == 5
    (failure,) = result.get_step_failure_events()
    message = failure.event_specific_data.error.message
    first_line = message.splitlines()[0]
    assert first_line.startswith(
        f"dagster._core.definitions.events.Failure: cannot read s3://{uploaded}/{broken} "
        f"from {proxy.endpoint}: its body broke on all 5 attempts (ResponseStreamingError: "
    )
    assert first_line.endswith(
        "its hour was not landed (hours landed before it stay, a re-run replaces them): "
        "check the network and the S3 endpoint, then re-run the partitions"
    )
    # Nothing of the run landed: its only batch never reached the warehouse.
    assert not Path(warehouse).exists()


PROBE = """
import sys, duckdb
path = sys.argv[1]
with duckdb.connect(path, read_only=True) as con:
    hours = con.sql("select count(*) from raw.ingestion_audit").fetchone()[0]
with duckdb.connect(path) as con:  # read-write: DuckDB's single-writer lock
    con.execute("create or replace table main.analyst_scratch as select 1 as x")
print(hours)
"""


def test_the_warehouse_is_free_for_other_processes_while_s3_is_read(
    tmp_path, uploaded, monkeypatch
):
    _, warehouse, _ = ingest(tmp_path, uploaded, "locks")  # the hours are there to re-run
    probes: list[subprocess.CompletedProcess] = []
    slow_object = f"/{uploaded}/{key('dt=2026-10-05/hour=08/c.parquet')}"

    def while_s3_answers(method: str, target: str) -> None:
        # Another process opens the file, read-only then read-write, while this GET waits.
        if target == slow_object:
            probes.append(
                subprocess.run(
                    [sys.executable, "-c", PROBE, warehouse],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            )

    with FaultProxy(moto_endpoint(), on_request=while_s3_answers, delay=0.2) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result, _, _ = ingest(tmp_path, uploaded, "locks")  # the same warehouse again

    assert result.success
    (probe,) = probes
    assert (probe.returncode, probe.stdout.strip()) == (0, "2"), probe.stderr
    assert len(tables(warehouse)["raw.ingestion_audit"]) == 2


BIG = "dt=2026-10-05/hour=08/big.jsonl.gz"


@pytest.fixture
def with_big_object(uploaded: str) -> tuple[str, bytes]:
    """The data set and, in hour 08, a gzip object of 40,000 events (~2 MB stored, ~9 MB of
    text): large enough that a body cut in half has delivered many chunks."""
    from tests.test_streaming import lines_of_events

    body = gzip.compress("\n".join(lines_of_events(40_000)).encode(), compresslevel=6)
    boto3.client("s3").put_object(Bucket=uploaded, Key=key(BIG), Body=body)
    return uploaded, body


def test_a_body_cut_mid_stream_resumes_from_the_byte_reached_and_lands_every_line_once(
    tmp_path, with_big_object, monkeypatch
):
    bucket, body = with_big_object
    _, clean_warehouse, _ = ingest(tmp_path, bucket, "clean")
    target = f"/{bucket}/{key(BIG)}"
    etag = boto3.client("s3").head_object(Bucket=bucket, Key=key(BIG))["ETag"]

    def schedule(method: str, path: str, n: int) -> str | None:
        return "reset_body" if path == target and n == 1 else None

    with FaultProxy(moto_endpoint(), schedule) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result, warehouse, _ = ingest(tmp_path, bucket, "cut")

    assert result.success
    assert proxy.injected == {"reset_body": 1}
    first, again = [h for m, p, h in proxy.requests if p == target]
    assert "Range" not in first
    # The second GET asks for the rest only, and only of the object first read.
    offset = int(again["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < offset < len(body)
    assert again["If-Match"] == etag
    assert tables(warehouse) == tables(clean_warehouse)
    assert [row[3] for row in tables(warehouse)["raw.ingestion_audit"]] == [10, 2 + 40_000]


def test_an_object_rewritten_while_its_body_is_resumed_fails_the_run_in_one_line(
    tmp_path, with_big_object, monkeypatch
):
    bucket, body = with_big_object
    target = f"/{bucket}/{key(BIG)}"
    direct = boto3.client("s3", endpoint_url=moto_endpoint())

    def schedule(method: str, path: str, n: int) -> str | None:
        return "reset_body" if path == target and n == 1 else None

    def rewrite(method: str, path: str) -> None:
        if path == target and proxy.seen[("GET", target)] == 2:  # a producer rewrites it
            direct.put_object(Bucket=bucket, Key=key(BIG), Body=gzip.compress(b"{}\n"))

    with FaultProxy(moto_endpoint(), schedule, on_request=rewrite) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        result, warehouse, _ = ingest(tmp_path, bucket, "rewritten", raise_on_error=False)

    assert not result.success
    assert proxy.seen[("GET", target)] == 2  # no retry can help: the object is another one
    (failure,) = result.get_step_failure_events()
    first_line = failure.event_specific_data.error.message.splitlines()[0]
    assert first_line.startswith(
        f"dagster._core.definitions.events.Failure: cannot read s3://{bucket}/{key(BIG)} "
        f"from {proxy.endpoint}: it changed while being read (ETag "
    )
    assert " bytes) (ClientError: An error occurred (PreconditionFailed) " in first_line
    assert first_line.endswith(
        "its hour was not landed (hours landed before it stay, a re-run replaces them): "
        "re-run the partitions once its producer has finished writing it"
    )
    assert not Path(warehouse).exists()  # its batch (both hours) never reached the warehouse
