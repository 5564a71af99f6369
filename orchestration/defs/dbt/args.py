"""dbt CLI arguments for a partitioned run, built from the partition's time window only."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from dagster import TimeWindow

#: dbt parses vars with this format; it rejects an offset such as +00:00.
DBT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def window_vars(window: TimeWindow) -> dict[str, str]:
    """The ``window_start``/``window_end`` vars (UTC, half-open) for a time window."""
    return {
        "window_start": _utc(window.start).strftime(DBT_TIME_FORMAT),
        "window_end": _utc(window.end).strftime(DBT_TIME_FORMAT),
    }


def dbt_build_args(
    window: TimeWindow | None, extra_vars: dict[str, str] | None = None
) -> list[str]:
    """``dbt build`` for exactly the window (all of history when there is none).

    ``buildable`` indirect selection runs a test only when each of its parents is built in
    this invocation or upstream of it: the daily reconciliation test (parents: hourly and
    daily) runs with the daily grain, not with the hourly one, before daily exists.
    """
    args = ["build", "--indirect-selection", "buildable"]
    dbt_vars = {**(window_vars(window) if window is not None else {}), **(extra_vars or {})}
    if dbt_vars:
        args += ["--vars", json.dumps(dbt_vars, sort_keys=True)]
    return args


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
