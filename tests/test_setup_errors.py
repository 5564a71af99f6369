"""A wrong environment fails a real run with one line naming the setting, before any trace.

Real Dagster runs of ``hourly_usage_job`` against moto's S3 server (or a closed port); the
first line of the failed step's error is what the UI and the run's log show first.
"""

from __future__ import annotations

import boto3
import pytest
from dagster import DagsterEventType

from orchestration.definitions import build_defs
from orchestration.errors import SetupError, dagster_instance
from orchestration.runner import run_job_range
from tests import pipeline_data as data
from tests.conftest import free_port

HOUR = "2026-10-05-07:00"


def first_error_line(defs, instance) -> tuple[str, str | None]:
    """(first line of the failed step's error, class of its cause) of a failing hourly run."""
    result = run_job_range(defs, "hourly_usage_job", HOUR, HOUR, instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error
    return error.message.splitlines()[0], error.cause.cls_name if error.cause else None


def hourly_defs(tmp_path, bucket: str):
    return build_defs(
        bucket=bucket,
        prefix=data.PREFIX,
        warehouse_path=str(tmp_path / "warehouse.duckdb"),
        analyst_dir=str(tmp_path / "analyst"),
    )


def test_a_run_against_a_missing_bucket_names_the_bucket_and_the_setting(
    tmp_path, s3_endpoint, instance
):
    line, cause = first_error_line(hourly_defs(tmp_path, "tb-no-such-bucket"), instance)
    assert line == (
        "orchestration.errors.SetupError: bucket 'tb-no-such-bucket' does not exist at "
        f"{s3_endpoint} (AWS_ENDPOINT_URL_S3): set TOKENBILL_S3_BUCKET to the bucket producers "
        "write to (or create it), or AWS_ENDPOINT_URL_S3 to the endpoint that has it"
    )
    assert cause == "NoSuchBucket"  # botocore's ClientError subclass for the code


def test_a_run_against_a_closed_endpoint_names_aws_endpoint_url_s3(
    tmp_path, s3_endpoint, bucket, instance, monkeypatch
):
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", closed)
    line, cause = first_error_line(hourly_defs(tmp_path, bucket), instance)
    assert line == (
        f"orchestration.errors.SetupError: cannot connect to the S3 endpoint {closed} "
        f"(AWS_ENDPOINT_URL_S3) to read s3://{bucket}/usage/: set AWS_ENDPOINT_URL_S3 to a "
        "reachable S3 endpoint (unset for AWS), or start the demo's S3 server (make ui) and "
        "source .tokenbill/env (written by make demo and make ui)"
    )
    assert cause == "EndpointConnectionError"


def test_a_run_without_credentials_names_the_credentials_chain(
    tmp_path, s3_endpoint, bucket, instance, monkeypatch
):
    data.upload(boto3.client("s3"), bucket)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # boto3's default session caches the credentials it found first; a fresh process has none.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    line, cause = first_error_line(hourly_defs(tmp_path, bucket), instance)
    assert line == (
        f"orchestration.errors.SetupError: no AWS credentials to read s3://{bucket}/usage/: set "
        "them in the AWS credentials chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        "AWS_PROFILE, ~/.aws/credentials or an instance role), or source .tokenbill/env "
        "(written by make demo and make ui) for the demo's S3 server"
    )
    assert cause == "NoCredentialsError"


def test_a_run_with_a_bad_setting_names_it(tmp_path, s3_endpoint, bucket, instance, monkeypatch):
    data.upload(boto3.client("s3"), bucket)
    monkeypatch.setenv("TOKENBILL_QUARANTINE_WARN_RATE", "1%")
    line, _ = first_error_line(hourly_defs(tmp_path, bucket), instance)
    assert line == (
        "orchestration.settings.SettingError: TOKENBILL_QUARANTINE_WARN_RATE='1%' is not a "
        "share between 0 and 1: set it to e.g. 0.01 (the default), or unset it"
    )


def test_no_dagster_home_is_one_line_naming_the_environment_file(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(SetupError) as raised:
        dagster_instance()
    assert str(raised.value) == (
        "DAGSTER_HOME is not set: source .tokenbill/env (written by make demo and make ui), or "
        "export DAGSTER_HOME=<a persistent directory> holding a dagster.yaml like "
        "orchestration/dagster.yaml"
    )


def test_a_dagster_home_that_is_not_a_directory_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "missing"))
    with pytest.raises(SetupError) as raised:
        dagster_instance()
    assert str(raised.value) == (
        f"DAGSTER_HOME={tmp_path / 'missing'} is not an existing directory: create it with a "
        "dagster.yaml like orchestration/dagster.yaml, or source .tokenbill/env (written by "
        "make demo and make ui)"
    )


def test_the_late_data_sensors_listing_names_a_missing_bucket(s3_endpoint):
    from orchestration.defs.operations.sensors import current_listings
    from orchestration.defs.resources import S3UsageBucket

    with pytest.raises(SetupError) as raised:
        current_listings(S3UsageBucket(bucket="tb-no-such-bucket", prefix="usage"), [HOUR])
    assert str(raised.value).startswith(
        f"bucket 'tb-no-such-bucket' does not exist at {s3_endpoint} (AWS_ENDPOINT_URL_S3): "
        "set TOKENBILL_S3_BUCKET"
    )
