"""dbt CLI arguments are built from the partition window alone (no dbt needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from dagster import TimeWindow

from orchestration.defs.dbt.args import dbt_build_args, window_vars


def test_hour_window_becomes_half_open_utc_vars_without_offset():
    window = TimeWindow(datetime(2026, 10, 5, 7, tzinfo=UTC), datetime(2026, 10, 5, 8, tzinfo=UTC))
    assert window_vars(window) == {
        "window_start": "2026-10-05T07:00:00",
        "window_end": "2026-10-05T08:00:00",
    }


def test_non_utc_window_is_converted_to_utc():
    cet = timezone(timedelta(hours=2))
    window = TimeWindow(datetime(2026, 10, 5, 2, tzinfo=cet), datetime(2026, 10, 6, 2, tzinfo=cet))
    assert window_vars(window)["window_start"] == "2026-10-05T00:00:00"


def test_build_args_for_a_month_backfill():
    window = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    args = dbt_build_args(window)
    assert args[:3] == ["build", "--indirect-selection", "buildable"]
    assert args[3] == "--vars"
    assert json.loads(args[4]) == {
        "window_start": "2026-10-01T00:00:00",
        "window_end": "2026-11-01T00:00:00",
    }


def test_build_args_without_a_window_rebuild_everything():
    assert dbt_build_args(None) == ["build", "--indirect-selection", "buildable"]
