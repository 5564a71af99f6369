"""Event-driven automation: re-ingest hours whose S3 objects changed, then roll their days up.

``late_data_sensor`` compares, for every hour already ingested in the lookback window, the
current S3 listing of the hour with the objects ingestion recorded in ``raw.ingested_objects``
(key and ETag). An hour whose listing differs (an object added, removed or rewritten) gets one
``hourly_usage_job`` run. Its ``run_key`` is the hour plus a fingerprint of the listing, so the
same change never requests two runs (Dagster launches one run per run key) and a later change
requests another. The cursor keeps the fingerprint requested per hour until the warehouse
catches up, so evaluations while the run is queued or running stay quiet. A requested run that
fails is not requested again for the same listing: re-execute it from the UI (or the next
change, or the nightly ``reclose_schedule``, picks the hour up).

``rerate_sensor`` watches the successful re-runs ``late_data_sensor`` launched. Tiers,
packages and allowances price the period-to-date quantity, so a late event in hour ``h``
changes the charges of every later hour of its billing period: the sensor requests one
ranged ``hourly_usage_job`` run that rebuilds only ``fct_rated_charges_hourly`` (with the
priced usage it reads and the attempt costs that read it; no re-ingestion) over
``[h + 1h, last rated hour of the billing periods containing h]``, with a run key derived
from the hour and the listing fingerprint of the late-data run.

``rollup_sensor`` watches the successful hourly runs that automation launched outside the
hourly schedule (``late_data_sensor``'s, ``rerate_sensor``'s and ``reclose_schedule``'s) and
requests one ranged ``daily_usage_job`` run for the days they covered, so days never stay
stale after their hours change. Months are rolled up by ``monthly_close_schedule`` only (see
``schedules.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from dagster import (
    AssetKey,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from orchestration.defs.ingestion.parsing import list_hour_objects
from orchestration.defs.operations.schedules import (
    DAILY_JOB,
    HOUR_FMT,
    HOURLY_JOB,
    RANGE_END_TAG,
    RANGE_START_TAG,
    TRIGGER_TAG,
    day_range_of_hours,
    floor_hour,
    hour_key,
)
from orchestration.defs.resources import S3UsageBucket, Warehouse
from orchestration.errors import explains_s3_errors
from orchestration.settings import operations_setting
from orchestration.timeutil import as_utc, naive_utc

LATE_DATA_INTERVAL_SECONDS = 300
ROLLUP_INTERVAL_SECONDS = 60
RERATE_INTERVAL_SECONDS = 60
#: What a re-rating run rebuilds: the rated charges only (rating reads the hourly token mart,
#: which the late hour's own re-run already rebuilt; nothing is re-ingested).
#: The priced usage first (a table since each window's pricing is computed once), then the
#: rated charges that read it, then the attempts' shares of them (a table too, which the
#: agent-run marts of the days rollup_sensor rolls up aggregate).
RERATE_ASSETS = [
    AssetKey(["marts", "int_rating__priced_usage"]),
    AssetKey(["marts", "fct_rated_charges_hourly"]),
    AssetKey(["marts", "int_agent_runs__attempt_costs"]),
]
#: How long an evaluation waits for a warehouse writer's lock before skipping the tick (a tick
#: must finish well within the sensor timeout; the next tick tries again).
WAREHOUSE_LOCK_WAIT_SECONDS = 20.0
#: Where rollup_sensor starts when it has no cursor yet (first enabled).
ROLLUP_FIRST_LOOKBACK = timedelta(days=1)
#: rollup_sensor re-reads runs updated this long before its cursor (see the sensor).
ROLLUP_OVERLAP = timedelta(minutes=5)
#: Tag holding the listing fingerprint a late-data run was requested for.
FINGERPRINT_TAG = "tokenbill/listing_fingerprint"
PARENT_RUN_TAG = "tokenbill/parent_run_id"
PARTITION_TAG = "dagster/partition"


def utc_now() -> datetime:
    """The sensors' clock (tests replace it)."""
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# late_data_sensor


class WarehouseUnavailable(Exception):
    """The warehouse cannot be compared against yet: missing, not ingested into, or busy."""


def listing_fingerprint(objects: Iterable[tuple[str, str]]) -> str:
    """A short, order-independent hash of an hour's (key, etag) pairs."""
    digest = hashlib.sha256()
    for key, etag in sorted(objects):
        digest.update(f"{key}\t{etag}\n".encode())
    return digest.hexdigest()[:16]


def late_data_run_key(partition_key: str, fingerprint: str) -> str:
    return f"late_data:{partition_key}:{fingerprint}"


def read_ingested_listings(warehouse: Warehouse, since: datetime) -> dict[str, str]:
    """partition key -> listing fingerprint, for every hour ingested at or after ``since``.

    An hour ingested with no object is there too (the fingerprint of nothing), so an object
    arriving in an hour that was empty is a change.
    """
    if not Path(warehouse.path).exists():
        raise WarehouseUnavailable(f"no warehouse at {warehouse.path} yet")
    probe = Warehouse(path=warehouse.path, lock_timeout_seconds=WAREHOUSE_LOCK_WAIT_SECONDS)
    since_naive = naive_utc(floor_hour(since))
    try:
        with probe.connect(read_only=True) as con:
            tables = {
                name
                for (name,) in con.execute(
                    "select table_name from information_schema.tables where table_schema = 'raw'"
                ).fetchall()
            }
            if not {"ingestion_audit", "ingested_objects"} <= tables:
                raise WarehouseUnavailable("nothing ingested yet (no raw.ingestion_audit)")
            hours = con.execute(
                "select partition_hour from raw.ingestion_audit where partition_hour >= ?",
                [since_naive],
            ).fetchall()
            objects = con.execute(
                "select partition_hour, source_key, etag from raw.ingested_objects "
                "where partition_hour >= ?",
                [since_naive],
            ).fetchall()
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseUnavailable(f"warehouse busy (locked by a writer): {exc}") from exc
        raise
    by_hour: dict[str, list[tuple[str, str]]] = {hour_key(h): [] for (h,) in hours}
    for hour, key, etag in objects:
        by_hour.setdefault(hour_key(hour), []).append((key, etag))
    return {hour: listing_fingerprint(pairs) for hour, pairs in by_hour.items()}


@explains_s3_errors
def current_listings(s3: S3UsageBucket, partition_keys: Iterable[str]) -> dict[str, str]:
    """partition key -> fingerprint of the hour's objects in S3 now."""
    client = s3.client()
    result = {}
    for key in partition_keys:
        hour = datetime.strptime(key, HOUR_FMT)
        prefix = s3.hour_prefix(hour.strftime("%Y-%m-%d"), hour.hour)
        listed = list_hour_objects(client, s3.bucket, prefix)
        result[key] = listing_fingerprint((o.key, o.etag) for o in listed)
    return result


def plan_late_data(
    ingested: Mapping[str, str], current: Mapping[str, str], requested: Mapping[str, str]
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Decide what to request: ``(hours to request as (key, fingerprint), new cursor)``.

    An hour is requested when its current listing differs from the ingested one and was not
    already requested for that same listing. The new cursor keeps the requested fingerprint of
    every hour still differing; an hour the warehouse caught up with (or that left the window)
    drops out of it.
    """
    to_request, still_pending = [], {}
    for key in sorted(ingested):
        fingerprint = current[key]
        if fingerprint == ingested[key]:
            continue
        still_pending[key] = fingerprint
        if requested.get(key) != fingerprint:
            to_request.append((key, fingerprint))
    return to_request, still_pending


@sensor(
    name="late_data_sensor",
    job_name=HOURLY_JOB,
    minimum_interval_seconds=LATE_DATA_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "Every 5 minutes: for each hour already ingested in the last "
        "TOKENBILL_SENSOR_LOOKBACK_HOURS (default 72), compare the S3 listing (keys and ETags) "
        "with raw.ingested_objects and re-run hourly_usage_job for every hour that changed "
        "(object added, removed or rewritten), once per change. Hours never ingested are left "
        "to hourly_usage_schedule. Stopped by default: enable it in the UI."
    ),
)
def late_data_sensor(context: SensorEvaluationContext, s3: S3UsageBucket, warehouse: Warehouse):
    lookback = operations_setting("TOKENBILL_SENSOR_LOOKBACK_HOURS")
    since = floor_hour(utc_now()) - timedelta(hours=lookback)
    try:
        ingested = read_ingested_listings(warehouse, since)
    except WarehouseUnavailable as exc:
        return SkipReason(str(exc))
    if not ingested:
        return SensorResult(
            skip_reason=SkipReason(f"no hour ingested since {hour_key(since)}"), cursor="{}"
        )
    requested = json.loads(context.cursor) if context.cursor else {}
    to_request, pending = plan_late_data(ingested, current_listings(s3, ingested), requested)
    cursor = json.dumps(pending, sort_keys=True)
    if not to_request:
        waiting = f"; {len(pending)} re-run(s) requested and not landed yet" if pending else ""
        return SensorResult(
            skip_reason=SkipReason(
                f"no new change in S3 to the {len(ingested)} hour(s) ingested since "
                f"{hour_key(since)}{waiting}"
            ),
            cursor=cursor,
        )
    context.log.info(f"hours changed in S3 since ingestion: {[k for k, _ in to_request]}")
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=late_data_run_key(key, fingerprint),
                partition_key=key,
                tags={TRIGGER_TAG: "late_data", FINGERPRINT_TAG: fingerprint},
            )
            for key, fingerprint in to_request
        ],
        cursor=cursor,
    )


# ---------------------------------------------------------------------------------------------
# rerate_sensor


def rerate_run_key(partition_key: str, fingerprint: str) -> str:
    return f"rerate:{partition_key}:{fingerprint}"


def read_rerate_end(warehouse: Warehouse, last_hour: datetime) -> datetime | None:
    """The last rated hour after ``last_hour`` in the billing periods containing it, or None.

    A rated row after ``last_hour`` whose billing period started at or before it belongs to a
    period containing ``last_hour`` (periods are contiguous): these are exactly the rows
    whose period-to-date quantity the late hour changed. The rule of the billing period is
    not repeated here: the rows carry their period.
    """
    if not Path(warehouse.path).exists():
        raise WarehouseUnavailable(f"no warehouse at {warehouse.path} yet")
    probe = Warehouse(path=warehouse.path, lock_timeout_seconds=WAREHOUSE_LOCK_WAIT_SECONDS)
    naive = naive_utc(floor_hour(last_hour))
    try:
        with probe.connect(read_only=True) as con:
            (found,) = con.execute(
                "select count(*) from information_schema.tables where table_schema = 'marts' "
                "and table_name = 'fct_rated_charges_hourly'"
            ).fetchone()
            if not found:
                return None
            (end,) = con.execute(
                "select max(usage_hour) from marts.fct_rated_charges_hourly "
                "where usage_hour > ? and billing_period_start <= ?",
                [naive, naive],
            ).fetchone()
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseUnavailable(f"warehouse busy (locked by a writer): {exc}") from exc
        raise
    return as_utc(end) if end is not None else None


@sensor(
    name="rerate_sensor",
    job_name=HOURLY_JOB,
    minimum_interval_seconds=RERATE_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "After each successful hourly_usage_job run launched by late_data_sensor, re-rate the "
        "later hours of the billing periods the late hour belongs to (tiers and allowances "
        "price the period so far): one ranged hourly_usage_job run of fct_rated_charges_hourly "
        "(with the priced usage it reads and the attempt costs that read it) only, from the "
        "hour after the late one to the last rated hour of those periods. "
        "Running by default: it acts only on late-data re-runs."
    ),
)
def rerate_sensor(context: SensorEvaluationContext, warehouse: Warehouse):
    since, seen = read_rollup_cursor(context.cursor)
    records = successful_hourly_runs(context, since, "late_data")
    new = [r for r in records if r.dagster_run.run_id not in seen]
    if not new:
        return SkipReason(f"no late-data re-run finished since {since.isoformat()}")
    requests, skipped = [], []
    for record in new:
        run = record.dagster_run
        hours = hour_range_of_run(run.tags)
        if hours is None:
            continue
        last = datetime.strptime(hours[1], HOUR_FMT).replace(tzinfo=UTC)
        try:
            end = read_rerate_end(warehouse, last)
        except WarehouseUnavailable as exc:
            return SkipReason(str(exc))  # cursor unchanged: the next tick tries again
        if end is None:
            skipped.append(hours[1])
            continue
        requests.append(
            RunRequest(
                run_key=rerate_run_key(hours[1], run.tags.get(FINGERPRINT_TAG, run.run_id)),
                asset_selection=RERATE_ASSETS,
                tags={
                    RANGE_START_TAG: hour_key(last + timedelta(hours=1)),
                    RANGE_END_TAG: hour_key(end),
                    TRIGGER_TAG: "rerate",
                    PARENT_RUN_TAG: run.run_id,
                },
            )
        )
    cursor = write_rollup_cursor(
        {r.dagster_run.run_id: as_utc(r.update_timestamp) for r in records}
    )
    if not requests:
        return SensorResult(
            skip_reason=SkipReason(f"no later rated hour in the periods of {skipped}"),
            cursor=cursor,
        )
    context.log.info(
        "re-rating later hours: "
        + ", ".join(f"{r.tags[RANGE_START_TAG]}..{r.tags[RANGE_END_TAG]}" for r in requests)
    )
    return SensorResult(run_requests=requests, cursor=cursor)


# ---------------------------------------------------------------------------------------------
# rollup_sensor


def rollup_run_key(parent_run_id: str) -> str:
    return f"rollup:{parent_run_id}"


def hour_range_of_run(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """(first, last) hourly partition of a run, from its range or partition tags."""
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        return tags[RANGE_START_TAG], tags[RANGE_END_TAG]
    if PARTITION_TAG in tags:
        return tags[PARTITION_TAG], tags[PARTITION_TAG]
    return None


def read_rollup_cursor(cursor: str | None) -> tuple[datetime, set[str]]:
    """(runs updated after this moment are new, minus these run ids already rolled up)."""
    if not cursor:
        return utc_now() - ROLLUP_FIRST_LOOKBACK, set()
    state = json.loads(cursor)
    return datetime.fromisoformat(state["updated_after"]), set(state["seen"])


def successful_hourly_runs(
    context: SensorEvaluationContext, since: datetime, triggers: str | list[str]
) -> list:
    """Successful ``hourly_usage_job`` runs started by ``triggers`` and updated since the
    cursor, less ``ROLLUP_OVERLAP`` (the caller skips the runs it has seen, rather than miss a
    run updated in the same second as the last one), oldest update first."""
    return context.instance.get_run_records(
        filters=RunsFilter(
            job_name=HOURLY_JOB,
            statuses=[DagsterRunStatus.SUCCESS],
            tags={TRIGGER_TAG: triggers},
            updated_after=since - ROLLUP_OVERLAP,
        ),
        order_by="update_timestamp",
        ascending=True,
    )


def write_rollup_cursor(update_times: Mapping[str, datetime]) -> str:
    """Remember the latest update time and the runs seen in the overlap before it."""
    latest = max(update_times.values())
    seen = sorted(r for r, t in update_times.items() if t >= latest - ROLLUP_OVERLAP)
    return json.dumps({"updated_after": latest.isoformat(), "seen": seen})


@sensor(
    name="rollup_sensor",
    job_name=DAILY_JOB,
    minimum_interval_seconds=ROLLUP_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "After each successful hourly_usage_job run launched by late_data_sensor, "
        "rerate_sensor or reclose_schedule, roll the days it covered up again: one ranged "
        "daily_usage_job run. "
        "Running by default: it only reads the run history and acts on runs automation "
        "launched, and without it those days' marts would lag their hours."
    ),
)
def rollup_sensor(context: SensorEvaluationContext):
    since, seen = read_rollup_cursor(context.cursor)
    # Run storage may keep update times to the second: look back over an overlap and skip the
    # runs already seen, rather than miss a run updated in the same second as the last one.
    records = successful_hourly_runs(context, since, ["late_data", "rerate", "reclose"])
    new = [r for r in records if r.dagster_run.run_id not in seen]
    if not new:
        return SkipReason(f"no hourly re-run finished since {since.isoformat()}")
    requests = []
    for record in new:
        run = record.dagster_run
        hours = hour_range_of_run(run.tags)
        if hours is None:
            continue
        first_day, last_day = day_range_of_hours(*hours)
        requests.append(
            RunRequest(
                run_key=rollup_run_key(run.run_id),
                tags={
                    RANGE_START_TAG: first_day,
                    RANGE_END_TAG: last_day,
                    TRIGGER_TAG: "rollup",
                    PARENT_RUN_TAG: run.run_id,
                },
            )
        )
    cursor = write_rollup_cursor(
        {r.dagster_run.run_id: as_utc(r.update_timestamp) for r in records}
    )
    if not requests:
        return SensorResult(skip_reason=SkipReason("no partitioned run to roll up"), cursor=cursor)
    return SensorResult(run_requests=requests, cursor=cursor)


sensors = [late_data_sensor, rerate_sensor, rollup_sensor]
