"""One place that maps the environment to tokenbill's settings.

Every setting is an environment variable with a default that runs the local demo; the README
lists them. Nothing else in the code base reads ``os.environ`` for these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dagster import EnvVar, Failure

REPO_ROOT = Path(__file__).resolve().parent.parent

#: name -> (default, what it is). The README's configuration table is written from this.
SETTINGS: dict[str, tuple[str, str]] = {
    "TOKENBILL_S3_BUCKET": ("tokenbill-usage", "S3 bucket holding the usage-event objects."),
    "TOKENBILL_S3_PREFIX": (
        "usage",
        "Key prefix; objects live at <prefix>/dt=YYYY-MM-DD/hour=HH/<name>.",
    ),
    "TOKENBILL_WAREHOUSE_PATH": (
        str(REPO_ROOT / ".tokenbill" / "warehouse.duckdb"),
        "The DuckDB warehouse file (created if missing).",
    ),
    "TOKENBILL_ANALYST_DIR": (
        "",
        "Directory of the analysts' read-only copy of the warehouse (same file name), "
        "published at the end of every run; empty: analyst/ beside the warehouse.",
    ),
    "TOKENBILL_DUCKDB_MEMORY_LIMIT": (
        "768MB",
        "Memory DuckDB may use per connection (ingestion, dbt) before spilling to disk.",
    ),
    "TOKENBILL_INGEST_BATCH_LINES": (
        "400000",
        "Ingestion routes and lands at most this many lines at once (an hour or an object "
        "larger than that is streamed in several batches): with TOKENBILL_INGEST_BATCH_MB, "
        "what bounds ingestion's memory.",
    ),
    "TOKENBILL_INGEST_BATCH_MB": (
        "64",
        "Ingestion routes and lands at most about this many MB of decoded text at once, and "
        "holds at most about this much of an hour's fetched text (a larger object is spooled "
        "and streamed in parts).",
    ),
    "TOKENBILL_FIRST_PARTITION": (
        "2026-01-01",
        "First hour/day/month partition (UTC date). Earlier events are never read.",
    ),
    "TOKENBILL_CATALOG_DIR": (
        str(REPO_ROOT / "catalog"),
        "Directory of the pricing catalog (customers, plans, subscriptions, overrides, "
        "provider_costs.csv).",
    ),
    "TOKENBILL_EXPORT_PREFIX": (
        "exports/invoices",
        "Key prefix (in TOKENBILL_S3_BUCKET) of the finalized-invoice export.",
    ),
    "TOKENBILL_ENFORCEMENT_KEY": (
        "enforcement/production.json",
        "Key (in TOKENBILL_S3_BUCKET) of the enforcement file a gateway reads; one per "
        "environment (e.g. enforcement/staging.json).",
    ),
    "TOKENBILL_ALERTS_PREFIX": (
        "exports/alerts",
        "Key prefix (in TOKENBILL_S3_BUCKET) of the billing alerts feed (JSON Lines).",
    ),
    "TOKENBILL_HOURLY_LAG_MINUTES": (
        "15",
        "Minute past each hour at which hourly_usage_schedule ingests the hour that just ended "
        "(0-59; under 30 so the 23:00 hour lands before the 00:30 daily rollup).",
    ),
    "TOKENBILL_INVOICE_GRACE_DAYS": (
        "3",
        "monthly_close_schedule closes the previous month at 02:00 UTC on day 1 + this.",
    ),
    "TOKENBILL_RECLOSE_DAYS": (
        "3",
        "Whole days reclose_schedule re-ingests every night at 03:00 UTC, in one ranged run.",
    ),
    "TOKENBILL_SENSOR_LOOKBACK_HOURS": (
        "72",
        "How far back late_data_sensor compares S3 with what was ingested.",
    ),
    "TOKENBILL_RUN_WATCHDOG_SECONDS": (
        "30",
        "How often run_worker_watchdog fails started runs whose worker process is gone (1-600).",
    ),
    "TOKENBILL_OTLP_CUSTOMER_KEYS": (
        "tokenbill.customer_id,user.id,enduser.id",
        "OTLP spans: attribute keys naming the customer, first found wins (span, then its "
        "resource).",
    ),
    "TOKENBILL_OTLP_FEATURE_KEYS": (
        "tokenbill.feature",
        "OTLP spans: attribute keys naming the feature, first found wins (span, then resource).",
    ),
    "TOKENBILL_LITELLM_CUSTOMER_FIELDS": (
        "end_user,metadata.user_api_key_team_id",
        "LiteLLM spend logs: fields naming the customer, first non-blank wins (dotted paths).",
    ),
    "TOKENBILL_QUARANTINE_WARN_RATE": (
        "0.01",
        "Quarantined share of lines above which the quarantine_rate check warns.",
    ),
    "TOKENBILL_ENGINE": (
        "duckdb",
        "The warehouse engine: duckdb (one file, the default) or spark (raw events land as "
        "Parquet under TOKENBILL_LAKE_ROOT; dbt runs its spark target).",
    ),
    "TOKENBILL_LAKE_ROOT": (
        str(REPO_ROOT / ".tokenbill" / "lake"),
        "Root of the Parquet lake raw events land in with TOKENBILL_ENGINE=spark: a local "
        "directory or an s3:// URL.",
    ),
    "TOKENBILL_SPARK_WAREHOUSE": (
        str(REPO_ROOT / ".tokenbill" / "spark" / "warehouse"),
        "With TOKENBILL_ENGINE=spark: the dbt spark target's warehouse directory and Derby "
        "metastore (spark.sql.warehouse.dir), shared by dbt and the Python assets.",
    ),
    "TOKENBILL_SPARK_MASTER": (
        "local[2]",
        "With TOKENBILL_ENGINE=spark: the Spark master of the Python assets' session "
        "(local[N]; sc://host:15002 for Spark Connect on a cluster).",
    ),
}


def setting(name: str) -> str:
    """The value of one tokenbill setting: the environment's, else the default."""
    default, _ = SETTINGS[name]
    return os.environ.get(name) or default


class SettingError(Failure, ValueError):
    """A setting whose value cannot be used; the message names it and says what to set.

    A Dagster ``Failure``: a step raising it fails with this one line first."""

    def __init__(self, message: str):
        super().__init__(description=message, allow_retries=False)


def share_setting(name: str, raw: str | None = None) -> float:
    """A setting that is a share between 0 and 1: ``raw`` (a resource field bound to it), or
    the environment's value when ``raw`` is None."""
    raw = setting(name) if raw is None else raw
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise SettingError(
            f"{name}={raw!r} is not a share between 0 and 1: set it to e.g. "
            f"{SETTINGS[name][0]} (the default), or unset it"
        )
    return value


#: The engines tokenbill runs on -> the dbt target (profiles.yml) each one builds.
ENGINES: dict[str, str] = {"duckdb": "local", "spark": "spark"}


def engine_setting(raw: str | None = None) -> str:
    """``TOKENBILL_ENGINE``: ``raw`` (a resource field bound to it), or the environment's value
    when ``raw`` is None; a value that is not an engine fails with one line saying what to set."""
    raw = setting("TOKENBILL_ENGINE") if raw is None else raw
    engine = raw.strip().lower()
    if engine not in ENGINES:
        raise SettingError(
            f"TOKENBILL_ENGINE={raw!r} is not an engine: set it to "
            + " or ".join(ENGINES)
            + " (duckdb, the default, when unset)"
        )
    return engine


#: name -> (minimum, maximum) of the integer operations settings (the schedules' and sensors').
OPERATIONS_SETTINGS: dict[str, tuple[int, int]] = {
    "TOKENBILL_HOURLY_LAG_MINUTES": (0, 59),
    "TOKENBILL_INVOICE_GRACE_DAYS": (0, 27),
    "TOKENBILL_RECLOSE_DAYS": (1, 31),
    "TOKENBILL_SENSOR_LOOKBACK_HOURS": (1, 24 * 62),
    "TOKENBILL_RUN_WATCHDOG_SECONDS": (1, 600),
}


def operations_setting(name: str) -> int:
    """An integer operations setting, checked against its bounds."""
    low, high = OPERATIONS_SETTINGS[name]
    raw = setting(name)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={value} is outside {low}..{high}")
    return value


def env_or_default(name: str) -> str | EnvVar:
    """Bind a resource field to ``EnvVar(name)`` when it is set, else to its default.

    ``EnvVar`` is resolved at run launch, so a deployment can change it without code; the
    default keeps the demo and tests runnable on a clean machine with nothing set.
    """
    return EnvVar(name) if os.environ.get(name) else SETTINGS[name][0]


def analyst_copy_path(warehouse_path: str, analyst_dir: str) -> Path:
    """The analysts' copy of the warehouse: the warehouse's file name in ``analyst_dir``
    (empty: ``analyst/`` beside the warehouse, so every warehouse, a test's too, has its own).

    The name is kept because DuckDB names a database after its file: the dbt views refer to
    tables as ``<name>.<schema>.<table>`` and resolve only under the same name.
    """
    warehouse = Path(warehouse_path)
    return Path(analyst_dir or warehouse.parent / "analyst") / warehouse.name


@dataclass(frozen=True)
class Settings:
    bucket: str
    prefix: str
    warehouse_path: str
    first_partition: str
    quarantine_warn_rate: float
    catalog_dir: str
    analyst_dir: str


def load_settings() -> Settings:
    return Settings(
        bucket=setting("TOKENBILL_S3_BUCKET"),
        prefix=setting("TOKENBILL_S3_PREFIX").strip("/"),
        warehouse_path=setting("TOKENBILL_WAREHOUSE_PATH"),
        first_partition=setting("TOKENBILL_FIRST_PARTITION"),
        quarantine_warn_rate=share_setting("TOKENBILL_QUARANTINE_WARN_RATE"),
        catalog_dir=setting("TOKENBILL_CATALOG_DIR"),
        analyst_dir=setting("TOKENBILL_ANALYST_DIR"),
    )
