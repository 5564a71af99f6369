"""Schedules and sensors: exact partition keys, tags and run keys, and the late-data sensor
against a real S3 server and a warehouse filled by real runs."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from dagster import (
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    build_schedule_context,
    build_sensor_context,
)

from orchestration.definitions import build_defs
from orchestration.defs.operations import schedules as ops_schedules
from orchestration.defs.operations import sensors as ops_sensors
from orchestration.defs.operations.schedules import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    TRIGGER_TAG,
    day_range_of_hours,
    last_complete_hour,
    previous_day,
    previous_month,
    reclose_range,
)
from orchestration.defs.operations.sensors import (
    late_data_run_key,
    listing_fingerprint,
    plan_late_data,
    rollup_run_key,
)
from orchestration.runner import run_job_range
from orchestration.settings import OPERATIONS_SETTINGS, operations_setting
from tests import pipeline_data as data

CATALOG_DIR = Path(__file__).parent / "fixtures" / "catalog_e2e"
H07, H08 = "2026-10-05-07:00", "2026-10-05-08:00"
PARTITION = "dagster/partition"


def ops_defs(bucket: str = "unused", warehouse_path: str = "unused.duckdb") -> Definitions:
    """The code location plus the operations, as definitions.py will wire them."""
    return Definitions.merge(
        build_defs(
            bucket=bucket,
            prefix=data.PREFIX,
            warehouse_path=warehouse_path,
            catalog_dir=str(CATALOG_DIR),
        ),
        Definitions(schedules=ops_schedules.schedules, sensors=ops_sensors.sensors),
    )


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Time arithmetic


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2026, 10, 5, 7, 15), "2026-10-05-06:00"),
        (utc(2026, 10, 5, 7, 0), "2026-10-05-06:00"),  # 06:00-07:00 ends exactly at 07:00
        (utc(2026, 10, 5, 7, 59, 59), "2026-10-05-06:00"),
        (utc(2026, 10, 6, 0, 15), "2026-10-05-23:00"),
        (utc(2027, 1, 1, 0, 15), "2026-12-31-23:00"),
        (datetime(2026, 10, 5, 9, 15), "2026-10-05-08:00"),  # naive is UTC
    ],
)
def test_last_complete_hour(now, expected):
    assert last_complete_hour(now) == expected


def test_last_complete_hour_converts_other_timezones_to_utc():
    from zoneinfo import ZoneInfo

    paris = datetime(2026, 10, 5, 9, 15, tzinfo=ZoneInfo("Europe/Paris"))  # 07:15Z
    assert last_complete_hour(paris) == "2026-10-05-06:00"


def test_previous_day_and_month():
    assert previous_day(utc(2026, 10, 6, 0, 30)) == "2026-10-05"
    assert previous_day(utc(2026, 11, 1, 0, 30)) == "2026-10-31"
    assert previous_month(utc(2026, 11, 4, 2)) == "2026-10-01"
    assert previous_month(utc(2027, 1, 4, 2)) == "2026-12-01"
    assert previous_month(utc(2026, 3, 1, 0)) == "2026-02-01"


def test_reclose_range():
    assert reclose_range(utc(2026, 11, 5, 3), 3) == ("2026-11-02-00:00", "2026-11-04-23:00")
    assert reclose_range(utc(2026, 11, 1, 3), 1) == ("2026-10-31-00:00", "2026-10-31-23:00")
    assert reclose_range(utc(2026, 3, 2, 3), 3) == ("2026-02-27-00:00", "2026-03-01-23:00")
    assert day_range_of_hours("2026-11-02-00:00", "2026-11-04-23:00") == (
        "2026-11-02",
        "2026-11-04",
    )


def test_operations_settings_defaults_overrides_and_bounds(monkeypatch):
    for name in OPERATIONS_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert [operations_setting(n) for n in OPERATIONS_SETTINGS] == [15, 3, 3, 72, 30]
    monkeypatch.setenv("TOKENBILL_RUN_WATCHDOG_SECONDS", "0")
    with pytest.raises(ValueError, match="outside 1..600"):
        operations_setting("TOKENBILL_RUN_WATCHDOG_SECONDS")
    monkeypatch.setenv("TOKENBILL_RECLOSE_DAYS", "5")
    assert operations_setting("TOKENBILL_RECLOSE_DAYS") == 5
    monkeypatch.setenv("TOKENBILL_HOURLY_LAG_MINUTES", "60")
    with pytest.raises(ValueError, match="outside 0..59"):
        operations_setting("TOKENBILL_HOURLY_LAG_MINUTES")
    monkeypatch.setenv("TOKENBILL_INVOICE_GRACE_DAYS", "three")
    with pytest.raises(ValueError, match="not an integer"):
        operations_setting("TOKENBILL_INVOICE_GRACE_DAYS")


# ---------------------------------------------------------------------------------------------
# Schedules


def tick(defs: Definitions, name: str, instance, when: datetime):
    schedule = defs.resolve_schedule_def(name)
    context = build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        repository_def=defs.get_repository_def(),
    )
    return schedule.evaluate_tick(context)


def test_schedules_are_utc_crons_on_their_jobs():
    defs = ops_defs()
    got = {
        s.name: (s.cron_schedule, s.execution_timezone, s.job_name)
        for s in (defs.resolve_schedule_def(n.name) for n in ops_schedules.schedules)
    }
    assert got == {
        "hourly_usage_schedule": ("15 * * * *", "UTC", "hourly_usage_job"),
        "daily_usage_schedule": ("30 0 * * *", "UTC", "daily_usage_job"),
        "monthly_close_schedule": ("0 2 4 * *", "UTC", "monthly_usage_job"),
        "reclose_schedule": ("0 3 * * *", "UTC", "hourly_usage_job"),
    }
    assert all(s.description for s in ops_schedules.schedules)


@pytest.mark.parametrize(
    ("name", "when", "key", "run_key"),
    [
        ("hourly_usage_schedule", utc(2026, 10, 5, 7, 15), "2026-10-05-06:00", "hourly:"),
        ("daily_usage_schedule", utc(2026, 10, 6, 0, 30), "2026-10-05", "daily:"),
        ("monthly_close_schedule", utc(2026, 11, 4, 2), "2026-10-01", "monthly_close:"),
    ],
)
def test_grain_schedules_request_the_last_complete_partition(instance, name, when, key, run_key):
    result = tick(ops_defs(), name, instance, when)
    assert result.skip_message is None
    (request,) = result.run_requests
    assert request.partition_key == key
    assert request.run_key == run_key + key
    assert request.tags["dagster/partition"] == key  # resolved against the job's partitions
    assert request.tags[TRIGGER_TAG] == run_key.rstrip(":")
    assert request.tags["dagster/schedule_name"] == name
    # A re-evaluated tick asks for the same run.
    assert tick(ops_defs(), name, instance, when).run_requests[0].run_key == request.run_key


def test_reclose_schedule_requests_one_ranged_hourly_run(instance, monkeypatch):
    monkeypatch.delenv("TOKENBILL_RECLOSE_DAYS", raising=False)
    result = tick(ops_defs(), "reclose_schedule", instance, utc(2026, 11, 5, 3))
    (request,) = result.run_requests
    assert request.partition_key is None
    assert request.run_key == "reclose:2026-11-02-00:00..2026-11-04-23:00"
    assert {k: v for k, v in request.tags.items() if k != "dagster/schedule_name"} == {
        RANGE_START_TAG: "2026-11-02-00:00",
        RANGE_END_TAG: "2026-11-04-23:00",
        TRIGGER_TAG: "reclose",
    }
    monkeypatch.setenv("TOKENBILL_RECLOSE_DAYS", "1")
    (request,) = tick(ops_defs(), "reclose_schedule", instance, utc(2026, 11, 5, 3)).run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (
        "2026-11-04-00:00",
        "2026-11-04-23:00",
    )


def test_schedules_never_request_partitions_before_the_first(instance):
    defs = ops_defs()
    assert tick(defs, "hourly_usage_schedule", instance, utc(2026, 1, 1, 0, 15)).skip_message
    assert tick(defs, "monthly_close_schedule", instance, utc(2026, 1, 4, 2)).skip_message
    (request,) = tick(defs, "reclose_schedule", instance, utc(2026, 1, 2, 3)).run_requests
    assert request.run_key == "reclose:2026-01-01-00:00..2026-01-01-23:00"


def sensor_context(defs: Definitions, instance, cursor: str | None = None):
    """What the daemon passes a sensor: the instance, the cursor and the code location's
    resources (build_sensor_context does not take them from ``definitions`` by itself)."""
    return build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    )


# ---------------------------------------------------------------------------------------------
# late_data_sensor: pure decisions


def test_plan_late_data_requests_each_change_once():
    ingested = {H07: "a", H08: "b"}
    assert plan_late_data(ingested, {H07: "a", H08: "b"}, {}) == ([], {})
    assert plan_late_data(ingested, {H07: "a2", H08: "b"}, {}) == ([(H07, "a2")], {H07: "a2"})
    # Requested, not landed yet: quiet.
    assert plan_late_data(ingested, {H07: "a2", H08: "b"}, {H07: "a2"}) == ([], {H07: "a2"})
    # Changed again meanwhile: a new request.
    assert plan_late_data(ingested, {H07: "a3", H08: "b"}, {H07: "a2"}) == (
        [(H07, "a3")],
        {H07: "a3"},
    )
    # Landed: drops out of the cursor.
    assert plan_late_data({H07: "a3"}, {H07: "a3"}, {H07: "a3"}) == ([], {})


def test_listing_fingerprint_ignores_order_and_sees_etags():
    assert listing_fingerprint([("k1", "e1"), ("k2", "e2")]) == listing_fingerprint(
        [("k2", "e2"), ("k1", "e1")]
    )
    assert listing_fingerprint([("k1", "e1")]) != listing_fingerprint([("k1", "e9")])
    assert listing_fingerprint([]) != listing_fingerprint([("k1", "e1")])


def test_sensor_skips_while_there_is_no_warehouse(instance, tmp_path):
    sensor = ops_sensors.late_data_sensor
    missing = ops_defs(warehouse_path=str(tmp_path / "missing.duckdb"))
    result = sensor.evaluate_tick(sensor_context(missing, instance))
    assert result.run_requests == []
    assert result.skip_message.startswith("no warehouse at")

    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    defs = ops_defs(warehouse_path=str(empty))
    result = sensor.evaluate_tick(sensor_context(defs, instance))
    assert result.run_requests == []
    assert result.skip_message == "nothing ingested yet (no raw.ingestion_audit)"


# ---------------------------------------------------------------------------------------------
# late_data_sensor and rollup_sensor against real S3, real runs, a real warehouse


def s3_fingerprint(s3_client, bucket: str, hour: str) -> str:
    """The hour's listing fingerprint, computed independently of the sensor's code."""
    day, hh = hour[:10], hour[11:13]
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{data.PREFIX}/dt={day}/hour={hh}/")
    return listing_fingerprint((o["Key"], o["ETag"].strip('"')) for o in listed["Contents"])


def test_late_data_sensor_requests_changed_hours_once(
    s3_client, bucket, instance, warehouse_path, monkeypatch
):
    for name in OPERATIONS_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    data.upload(s3_client, bucket)
    defs = ops_defs(bucket, warehouse_path)
    assert run_job_range(defs, "catalog_job", None, None, instance).success
    assert run_job_range(defs, "hourly_usage_job", H07, H08, instance).success

    sensor = defs.resolve_sensor_def("late_data_sensor")
    clock = {"now": utc(2026, 10, 5, 10, 30)}
    monkeypatch.setattr(ops_sensors, "utc_now", lambda: clock["now"])

    def evaluate(cursor=None):
        return sensor.evaluate_tick(sensor_context(defs, instance, cursor))

    # Nothing changed since ingestion (hour 2026-10-06 00 has an object but was never ingested).
    result = evaluate()
    assert result.run_requests == []
    assert result.skip_message == (
        "no new change in S3 to the 2 hour(s) ingested since 2026-10-02-10:00"
    )
    assert json.loads(result.cursor) == {}

    # An object added to hour 07, one rewritten (new ETag) in hour 08, one added to an hour
    # never ingested.
    data.upload(s3_client, bucket, {data.LATE_KEY: data.LATE_BODY})
    data.upload(s3_client, bucket, {"dt=2026-10-05/hour=08/c.parquet": b"rewritten once"})
    data.upload(s3_client, bucket, {"dt=2026-10-05/hour=09/new.jsonl": data.LATE_BODY})
    fp07, fp08 = (s3_fingerprint(s3_client, bucket, h) for h in (H07, H08))

    result = evaluate(result.cursor)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        (H07, late_data_run_key(H07, fp07)),
        (H08, late_data_run_key(H08, fp08)),
    ]
    assert all(r.tags[TRIGGER_TAG] == "late_data" for r in result.run_requests)
    assert json.loads(result.cursor) == {H07: fp07, H08: fp08}
    requested_cursor = result.cursor

    # The runs are requested but have not landed: the next evaluation asks for nothing.
    result = evaluate(requested_cursor)
    assert result.run_requests == []
    assert result.skip_message.endswith("2 re-run(s) requested and not landed yet")
    assert result.cursor == requested_cursor
    # Without the cursor the same change yields the same run keys (Dagster dedupes them).
    assert [r.run_key for r in evaluate().run_requests] == [
        late_data_run_key(H07, fp07),
        late_data_run_key(H08, fp08),
    ]

    # A later change to hour 08 is a new request, under a new run key.
    data.upload(s3_client, bucket, {"dt=2026-10-05/hour=08/c.parquet": b"rewritten twice"})
    fp08_again = s3_fingerprint(s3_client, bucket, H08)
    result = evaluate(requested_cursor)
    (request,) = result.run_requests
    assert (request.partition_key, request.run_key) == (H08, late_data_run_key(H08, fp08_again))
    assert fp08_again != fp08
    cursor = result.cursor

    # Three days later hour 07 has left the 72-hour window; hour 08 has not.
    clock["now"] = utc(2026, 10, 8, 8, 30)
    assert [r.partition_key for r in evaluate().run_requests] == [H08]
    monkeypatch.setenv("TOKENBILL_SENSOR_LOOKBACK_HOURS", "1")
    assert evaluate().skip_message == "no hour ingested since 2026-10-08-07:00"
    monkeypatch.delenv("TOKENBILL_SENSOR_LOOKBACK_HOURS")
    clock["now"] = utc(2026, 10, 5, 10, 30)

    # Hour 08 back to what was ingested (as after its re-run lands): it matches S3 again and
    # drops out of the cursor, while hour 07's request is still pending.
    data.upload(s3_client, bucket, {"dt=2026-10-05/hour=08/c.parquet": data.parquet_body()})
    assert s3_fingerprint(s3_client, bucket, H08) not in (fp08, fp08_again)
    result = evaluate(cursor)
    assert result.run_requests == []
    assert json.loads(result.cursor) == {H07: fp07}


# ---------------------------------------------------------------------------------------------
# rollup_sensor


def record_run(instance, status: DagsterRunStatus, tags: dict[str, str]) -> str:
    run = DagsterRun(
        job_name="hourly_usage_job", run_id=str(uuid.uuid4()), status=status, tags=tags
    )
    instance.add_run(run)
    return run.run_id


def test_rollup_sensor_rolls_up_the_days_of_automation_reruns_once(instance):
    defs = ops_defs()
    late = record_run(
        instance,
        DagsterRunStatus.SUCCESS,
        {TRIGGER_TAG: "late_data", "dagster/partition": "2026-10-05-08:00"},
    )
    reclose = record_run(
        instance,
        DagsterRunStatus.SUCCESS,
        {
            TRIGGER_TAG: "reclose",
            RANGE_START_TAG: "2026-11-02-00:00",
            RANGE_END_TAG: "2026-11-04-23:00",
        },
    )
    # Not rolled up here: the hourly schedule's runs (daily_usage_schedule follows them) and
    # runs that did not succeed.
    record_run(instance, DagsterRunStatus.SUCCESS, {TRIGGER_TAG: "hourly", PARTITION: H07})
    record_run(instance, DagsterRunStatus.FAILURE, {TRIGGER_TAG: "late_data", PARTITION: H07})
    record_run(instance, DagsterRunStatus.STARTED, {TRIGGER_TAG: "reclose", PARTITION: H07})

    rollup = defs.resolve_sensor_def("rollup_sensor")
    result = rollup.evaluate_tick(sensor_context(defs, instance))
    assert [
        (r.run_key, r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG], r.tags[TRIGGER_TAG])
        for r in result.run_requests
    ] == [
        (rollup_run_key(late), "2026-10-05", "2026-10-05", "rollup"),
        (rollup_run_key(reclose), "2026-11-02", "2026-11-04", "rollup"),
    ]
    assert all(r.partition_key is None for r in result.run_requests)

    again = rollup.evaluate_tick(sensor_context(defs, instance, result.cursor))
    assert again.run_requests == []
    assert again.skip_message.startswith("no hourly re-run finished since")

    later = record_run(
        instance, DagsterRunStatus.SUCCESS, {TRIGGER_TAG: "late_data", PARTITION: H07}
    )
    (request,) = rollup.evaluate_tick(sensor_context(defs, instance, result.cursor)).run_requests
    assert request.run_key == rollup_run_key(later)
