"""The three time grains. Every partition is a UTC calendar hour, day or month."""

from __future__ import annotations

from dagster import (
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    MonthlyPartitionsDefinition,
)

from orchestration.settings import setting

FIRST_PARTITION = setting("TOKENBILL_FIRST_PARTITION")

hourly_partitions = HourlyPartitionsDefinition(
    start_date=f"{FIRST_PARTITION}-00:00", timezone="UTC"
)
daily_partitions = DailyPartitionsDefinition(start_date=FIRST_PARTITION, timezone="UTC")
monthly_partitions = MonthlyPartitionsDefinition(
    start_date=FIRST_PARTITION[:8] + "01", timezone="UTC"
)
