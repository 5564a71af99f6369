"""Running the asset graph for a period in process, as one run per grain.

The demo, the benchmark and the tests use this; in production the same ranged runs are
what a Dagster UI backfill launches (every asset has a single-run backfill policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from orchestration.defs.operations.jobs import GRAIN_JOBS, catalog_job
from orchestration.defs.operations.schedules import RANGE_END_TAG, RANGE_START_TAG

CATALOG_JOB = catalog_job.name


@dataclass(frozen=True)
class GrainRun:
    job_name: str
    first_key: str
    last_key: str
    result: ExecuteInProcessResult


def run_job_range(
    defs: Definitions,
    job_name: str,
    first_key: str | None,
    last_key: str | None,
    instance: DagsterInstance,
    raise_on_error: bool = True,
    log_level: str = "INFO",
    tags: dict[str, str] | None = None,
) -> ExecuteInProcessResult:
    """One run of ``job_name`` over the partition range [first_key, last_key] (no keys: an
    unpartitioned job)."""
    job = defs.resolve_job_def(job_name)
    run_tags = dict(tags or {})
    if first_key:
        run_tags[RANGE_START_TAG] = first_key
        run_tags[RANGE_END_TAG] = last_key
    return job.execute_in_process(
        instance=instance,
        tags=run_tags,
        raise_on_error=raise_on_error,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )


def run_period(
    defs: Definitions,
    start: datetime,
    end: datetime,
    instance: DagsterInstance,
    log_level: str = "INFO",
    with_catalog: bool = True,
    tags: dict[str, str] | None = None,
    raise_on_error: bool = True,
) -> list[GrainRun]:
    """Backfill [start, end) at every grain: hours, then days, then months, one run each,
    after loading the pricing catalog (``with_catalog``). With ``raise_on_error=False`` a
    failed run is returned like the others and the next grains still run.

    A day or month only partly inside the period is rebuilt whole (its rollup is stale too).
    """
    runs = []
    if with_catalog:
        result = run_job_range(
            defs, CATALOG_JOB, None, None, instance, raise_on_error, log_level, tags
        )
        runs.append(GrainRun(CATALOG_JOB, "-", "-", result))
    for job_name, first_key, last_key in plan_period(start, end):
        result = run_job_range(
            defs, job_name, first_key, last_key, instance, raise_on_error, log_level, tags
        )
        runs.append(GrainRun(job_name, first_key, last_key, result))
    return runs


def plan_period(start: datetime, end: datetime) -> list[tuple[str, str, str]]:
    """(job, first partition key, last partition key) per grain covering [start, end)."""
    last_moment = end - timedelta(microseconds=1)
    return [
        (
            job.name,
            job.partitions_def.get_partition_key_for_timestamp(start.timestamp()),
            job.partitions_def.get_partition_key_for_timestamp(last_moment.timestamp()),
        )
        for job in GRAIN_JOBS
    ]
