"""Ingestion's definitions: ``raw_usage_events`` (and its checks) and its settings."""

from __future__ import annotations

from dagster import Definitions

from orchestration.defs.ingestion.assets import raw_usage_events
from orchestration.defs.ingestion.resources import (
    BATCH_LINES,
    BATCH_MB,
    QUARANTINE_WARN_RATE,
    IngestionSettings,
)
from orchestration.settings import env_or_default


def build_defs() -> Definitions:
    return Definitions(
        assets=[raw_usage_events],
        resources={
            "ingestion": IngestionSettings(
                quarantine_warn_rate=env_or_default(QUARANTINE_WARN_RATE),
                engine=env_or_default("TOKENBILL_ENGINE"),
                lake_root=env_or_default("TOKENBILL_LAKE_ROOT"),
                batch_lines=env_or_default(BATCH_LINES),
                batch_mb=env_or_default(BATCH_MB),
            )
        },
    )
