"""Ingestion's own settings, as a resource (where the events are is ``S3UsageBucket``'s)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from orchestration.settings import SETTINGS, SettingError, engine_setting, share_setting

QUARANTINE_WARN_RATE = "TOKENBILL_QUARANTINE_WARN_RATE"
BATCH_LINES = "TOKENBILL_INGEST_BATCH_LINES"
BATCH_MB = "TOKENBILL_INGEST_BATCH_MB"


class IngestionSettings(ConfigurableResource):
    """What ``raw_usage_events`` judges a landed hour by, and how much it routes at once."""

    quarantine_warn_rate: str = Field(
        default=SETTINGS[QUARANTINE_WARN_RATE][0],
        description="Quarantined share of lines above which the quarantine_rate check warns "
        f"({QUARANTINE_WARN_RATE}, between 0 and 1).",
    )
    batch_lines: str = Field(
        default=SETTINGS[BATCH_LINES][0],
        description=f"Most lines routed and landed at once ({BATCH_LINES}, >= 1).",
    )
    batch_mb: str = Field(
        default=SETTINGS[BATCH_MB][0],
        description=f"Most MB of decoded text routed and landed at once, and held of an "
        f"hour's fetched text: larger objects are streamed in parts ({BATCH_MB}, >= 1).",
    )

    engine: str = Field(
        default=SETTINGS["TOKENBILL_ENGINE"][0],
        description="Where raw events land (TOKENBILL_ENGINE): duckdb, the warehouse's raw "
        "tables, or spark, Parquet partitions under lake_root.",
    )
    lake_root: str = Field(
        default=SETTINGS["TOKENBILL_LAKE_ROOT"][0],
        description="Root of the Parquet lake (TOKENBILL_LAKE_ROOT): a directory or s3:// URL.",
    )

    def warn_rate(self) -> float:
        """The share, checked: a wrong value fails the step with one line naming the setting."""
        return share_setting(QUARANTINE_WARN_RATE, self.quarantine_warn_rate)

    def lake_sink(self):
        """The Parquet lake sink with the spark engine; None (the warehouse) with duckdb. A
        wrong engine fails the step with one line naming the setting."""
        if engine_setting(self.engine) != "spark":
            return None
        from orchestration.defs.ingestion.lake import LakeSink

        return LakeSink(self.lake_root)

    def max_lines(self) -> int:
        return _positive(BATCH_LINES, self.batch_lines)

    def max_bytes(self) -> int:
        return _positive(BATCH_MB, self.batch_mb) * 1024 * 1024


def _positive(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SettingError(
            f"{name}={raw!r} is not a whole number >= 1: set it to e.g. {SETTINGS[name][0]} "
            "(the default), or unset it"
        )
    return value
