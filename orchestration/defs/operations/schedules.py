"""When the grains run by themselves: one schedule per grain, plus a nightly re-close.

Every schedule is in UTC, like the partitions, and targets its job (``jobs.py``) by name. The
time arithmetic lives in small pure functions (``last_complete_hour``, ``previous_day``,
``previous_month``, ``reclose_range``) that return partition keys; the schedules only wrap
them in RunRequests with a stable ``run_key``, so a re-evaluated tick never launches a second
run.

Timeline of a day (defaults)::

    HH:15   hourly_usage_schedule   ingest hour HH-1 (TOKENBILL_HOURLY_LAG_MINUTES after it)
    00:30   daily_usage_schedule    roll up yesterday
    02:00   monthly_close_schedule  on day 1 + TOKENBILL_INVOICE_GRACE_DAYS: close last month
    03:00   reclose_schedule        re-ingest the last TOKENBILL_RECLOSE_DAYS days in one run;
                                    rollup_sensor then rolls those days up again

Keep ``TOKENBILL_INVOICE_GRACE_DAYS >= TOKENBILL_RECLOSE_DAYS``: the last re-close touching a
month (day ``RECLOSE_DAYS`` of the next month, 03:00) then runs, and is rolled up, before the
month closes (day ``1 + GRACE_DAYS``, 02:00), so a closed month is never changed by automation.
Re-closing a month after its invoices went out is an operator's decision (re-run
``monthly_usage_job`` for it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import (
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from orchestration.defs.operations.jobs import daily_job, hourly_job, monthly_job
from orchestration.defs.partitions import FIRST_PARTITION
from orchestration.settings import operations_setting
from orchestration.timeutil import as_utc

HOURLY_JOB = hourly_job.name
DAILY_JOB = daily_job.name
MONTHLY_JOB = monthly_job.name

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
#: Set on every run launched by tokenbill's automation: which schedule or sensor asked for it.
TRIGGER_TAG = "tokenbill/trigger"

HOUR_FMT = "%Y-%m-%d-%H:%M"
DAY_FMT = "%Y-%m-%d"

# ---------------------------------------------------------------------------------------------
# Time arithmetic: pure functions from a moment to partition keys


def floor_hour(moment: datetime) -> datetime:
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
    return floor_hour(moment).replace(hour=0)


def hour_key(hour: datetime) -> str:
    return as_utc(hour).strftime(HOUR_FMT)


def day_key(day: datetime) -> str:
    return as_utc(day).strftime(DAY_FMT)


def last_complete_hour(now: datetime) -> str:
    """The hourly partition that ended at or before ``now`` most recently (07:15 -> 06:00)."""
    return hour_key(floor_hour(now) - timedelta(hours=1))


def previous_day(now: datetime) -> str:
    """The daily partition that ended at or before ``now`` most recently."""
    return day_key(floor_day(now) - timedelta(days=1))


def previous_month(now: datetime) -> str:
    """The monthly partition that ended at or before ``now`` most recently (key: its 1st)."""
    first_of_this_month = floor_day(now).replace(day=1)
    return day_key((first_of_this_month - timedelta(days=1)).replace(day=1))


def reclose_range(now: datetime, days: int) -> tuple[str, str]:
    """First and last hourly partition of the ``days`` whole days before ``now``'s day."""
    today = floor_day(now)
    return hour_key(today - timedelta(days=days)), hour_key(today - timedelta(hours=1))


def day_range_of_hours(first_hour_key: str, last_hour_key: str) -> tuple[str, str]:
    """The daily partitions (first, last) covering an hourly range."""
    first = datetime.strptime(first_hour_key, HOUR_FMT)
    last = datetime.strptime(last_hour_key, HOUR_FMT)
    return first.strftime(DAY_FMT), last.strftime(DAY_FMT)


def _before_first_partition(key: str) -> bool:
    """Partition keys of every grain start with the date, so they compare as text."""
    return key[:10] < FIRST_PARTITION


def _tick_time(context: ScheduleEvaluationContext) -> datetime:
    return as_utc(context.scheduled_execution_time or datetime.now(UTC))


def _partition_request(grain: str, key: str) -> RunRequest | SkipReason:
    if _before_first_partition(key):
        return SkipReason(f"{key} is before TOKENBILL_FIRST_PARTITION={FIRST_PARTITION}")
    return RunRequest(run_key=f"{grain}:{key}", partition_key=key, tags={TRIGGER_TAG: grain})


# ---------------------------------------------------------------------------------------------
# Schedules

HOURLY_LAG_MINUTES = operations_setting("TOKENBILL_HOURLY_LAG_MINUTES")
INVOICE_GRACE_DAYS = operations_setting("TOKENBILL_INVOICE_GRACE_DAYS")


@schedule(
    name="hourly_usage_schedule",
    cron_schedule=f"{HOURLY_LAG_MINUTES} * * * *",
    execution_timezone="UTC",
    job_name=HOURLY_JOB,
    description=(
        f"Every hour at minute {HOURLY_LAG_MINUTES} (TOKENBILL_HOURLY_LAG_MINUTES) UTC: ingest "
        "the hour that just ended and rebuild its hourly marts and rated charges."
    ),
)
def hourly_usage_schedule(context: ScheduleEvaluationContext):
    return _partition_request("hourly", last_complete_hour(_tick_time(context)))


@schedule(
    name="daily_usage_schedule",
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    job_name=DAILY_JOB,
    description="Every day at 00:30 UTC: roll yesterday up from its hourly marts. Its last hour "
    "is ingested at 00:MM by hourly_usage_schedule (MM = TOKENBILL_HOURLY_LAG_MINUTES, keep it "
    "under 30); a day rolled up too early is fixed by reclose_schedule and rollup_sensor.",
)
def daily_usage_schedule(context: ScheduleEvaluationContext):
    return _partition_request("daily", previous_day(_tick_time(context)))


@schedule(
    name="monthly_close_schedule",
    cron_schedule=f"0 2 {1 + INVOICE_GRACE_DAYS} * *",
    execution_timezone="UTC",
    job_name=MONTHLY_JOB,
    description=(
        f"Day {1 + INVOICE_GRACE_DAYS} of every month at 02:00 UTC: close the previous month "
        f"(roll it up from its days) once the {INVOICE_GRACE_DAYS}-day invoice grace period "
        "(TOKENBILL_INVOICE_GRACE_DAYS) for late data has passed."
    ),
)
def monthly_close_schedule(context: ScheduleEvaluationContext):
    return _partition_request("monthly_close", previous_month(_tick_time(context)))


@schedule(
    name="reclose_schedule",
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    job_name=HOURLY_JOB,
    description=(
        "Every day at 03:00 UTC: re-ingest every hour of the last TOKENBILL_RECLOSE_DAYS whole "
        "days (default 3) in ONE ranged run of hourly_usage_job, catching whatever arrived "
        "late. When it succeeds, rollup_sensor re-rolls those days up (daily_usage_job)."
    ),
)
def reclose_schedule(context: ScheduleEvaluationContext):
    days = operations_setting("TOKENBILL_RECLOSE_DAYS")
    first, last = reclose_range(_tick_time(context), days)
    if _before_first_partition(last):
        return SkipReason(f"{last} is before TOKENBILL_FIRST_PARTITION={FIRST_PARTITION}")
    if _before_first_partition(first):
        first = f"{FIRST_PARTITION}-00:00"
    return RunRequest(
        run_key=f"reclose:{first}..{last}",
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last, TRIGGER_TAG: "reclose"},
    )


schedules = [
    hourly_usage_schedule,
    daily_usage_schedule,
    monthly_close_schedule,
    reclose_schedule,
]
