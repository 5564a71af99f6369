"""Cross-hour resends: the staging view and the hourly mart drop an event_id that already
landed in an earlier hour within the lookback (168 h), and keep it beyond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl
import pytest
from dagster import TimeWindow

from orchestration.defs.ingestion.landing import ensure_raw_schema
from tests.dbt_support import dbt_build, query

T0 = datetime(2026, 10, 5, 10)
# (event_id, hours after T0, source object, output tokens)
ROWS = [
    ("x", 0, "a", 1),  # first send
    ("x", 2, "b", 10),  # resent two hours later: dropped
    ("z", 0, "a", 100),
    ("z", 1, "b", 1_000),  # resent twice: both later copies dropped
    ("z", 3, "c", 10_000),
    ("y", 0, "a", 100_000),
    ("y", 169, "d", 1_000_000),  # 169 h later, beyond the lookback: a new event
    ("w", 2, "b", 10_000_000),  # sent once
]


def _raw() -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "partition_hour": T0 + timedelta(hours=h),
                "source_key": f"usage/{obj}.jsonl",
                "line_number": i + 1,
                "event_id": event_id,
                "event_ts": T0 + timedelta(hours=h, minutes=5),
                "customer_id": "c",
                "model": "m",
                "status": "success",
                "attempt": 1,
                "input_tokens": 0,
                "output_tokens": output,
            }
            for i, (event_id, h, obj, output) in enumerate(ROWS)
        ]
    )


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("staging")
    path = str(root / "warehouse.duckdb")
    with duckdb.connect(path) as con:
        ensure_raw_schema(con)
        con.register("rows", _raw().to_arrow())
        con.execute("insert into raw.usage_events by name select * from rows")
    # Build the hourly mart for one window only: the hour of the second copy of x and w.
    hour = T0 + timedelta(hours=2)
    window = TimeWindow(hour.replace(tzinfo=UTC), (hour + timedelta(hours=1)).replace(tzinfo=UTC))
    result = dbt_build(
        path, root / "target", window, "stg_tokenbill__usage_events", "fct_token_usage_hourly"
    )
    assert result.returncode == 0, result.stdout[-3000:]
    return path


def test_the_staging_view_keeps_first_sends_and_sends_beyond_the_lookback(warehouse):
    kept = query(
        warehouse,
        "select event_id, output_tokens from staging.stg_tokenbill__usage_events "
        "order by output_tokens",
    )
    assert kept == [("x", 1), ("z", 100), ("y", 100_000), ("y", 1_000_000), ("w", 10_000_000)]


def test_a_window_reads_the_lookback_before_it_to_drop_resends(warehouse):
    # Hour T0+2 holds x's resend (its first send is two hours before the window) and w.
    hourly = query(
        warehouse, "select usage_hour, event_count, output_tokens from marts.fct_token_usage_hourly"
    )
    assert hourly == [(T0 + timedelta(hours=2), 1, 10_000_000)]
