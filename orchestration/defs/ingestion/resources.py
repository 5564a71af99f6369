"""Ingestion's own settings, as a resource (where the events are is ``S3UsageBucket``'s)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from orchestration.settings import SETTINGS, engine_setting, share_setting

QUARANTINE_WARN_RATE = "TOKENBILL_QUARANTINE_WARN_RATE"


class IngestionSettings(ConfigurableResource):
    """What ``raw_usage_events`` judges a landed hour by."""

    quarantine_warn_rate: str = Field(
        default=SETTINGS[QUARANTINE_WARN_RATE][0],
        description="Quarantined share of lines above which the quarantine_rate check warns "
        f"({QUARANTINE_WARN_RATE}, between 0 and 1).",
    )

    def warn_rate(self) -> float:
        """The share, checked: a wrong value fails the step with one line naming the setting."""
        return share_setting(QUARANTINE_WARN_RATE, self.quarantine_warn_rate)

    engine: str = Field(
        default=SETTINGS["TOKENBILL_ENGINE"][0],
        description="Where raw events land (TOKENBILL_ENGINE): duckdb, the warehouse's raw "
        "tables, or spark, Parquet partitions under lake_root.",
    )
    lake_root: str = Field(
        default=SETTINGS["TOKENBILL_LAKE_ROOT"][0],
        description="Root of the Parquet lake (TOKENBILL_LAKE_ROOT): a directory or s3:// URL.",
    )

    def lake_sink(self):
        """The Parquet lake sink with the spark engine; None (the warehouse) with duckdb. A
        wrong engine fails the step with one line naming the setting."""
        if engine_setting(self.engine) != "spark":
            return None
        from orchestration.defs.ingestion.lake import LakeSink

        return LakeSink(self.lake_root)
