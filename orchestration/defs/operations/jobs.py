"""The jobs: what runs together. Each job's name is written here only; the schedules, the
sensors and ``orchestration/runner.py`` take the job objects (or their ``name``) from here.

Every job ends with ``analyst_snapshot``, so each run that writes the warehouse publishes it.
"""

from __future__ import annotations

from dagster import define_asset_job

from orchestration.defs.alerts.assets import alerts_feed
from orchestration.defs.dbt.assets import dbt_catalog, dbt_daily, dbt_hourly, dbt_monthly
from orchestration.defs.enforcement.assets import enforcement_file
from orchestration.defs.ingestion.assets import raw_usage_events
from orchestration.defs.invoicing.assets import invoice_export
from orchestration.defs.partitions import daily_partitions, hourly_partitions, monthly_partitions
from orchestration.defs.publishing.assets import analyst_snapshot
from orchestration.defs.rating.assets import pricing_catalog
from orchestration.defs.wallets.ledger_asset import wallet_ledger

catalog_job = define_asset_job(
    "catalog_job",
    selection=[pricing_catalog, dbt_catalog, analyst_snapshot],
    description="Load the pricing catalog and the wallets (together: all or nothing) and "
    "rebuild the dimension views. Then backfill the hours whose prices changed.",
)
hourly_job = define_asset_job(
    "hourly_usage_job",
    selection=[raw_usage_events, dbt_hourly, enforcement_file, analyst_snapshot],
    partitions_def=hourly_partitions,
    description="Ingest an hour (or a range of hours) from S3, rebuild its hourly marts and "
    "replace the enforcement file.",
)
daily_job = define_asset_job(
    "daily_usage_job",
    selection=[dbt_daily, alerts_feed, analyst_snapshot],
    partitions_def=daily_partitions,
    description="Roll a day (or a range of days) up from the hourly marts and export the new "
    "billing alerts.",
)
monthly_job = define_asset_job(
    "monthly_usage_job",
    selection=[wallet_ledger, dbt_monthly, invoice_export, alerts_feed, analyst_snapshot],
    partitions_def=monthly_partitions,
    description="Close a month: roll it up from the daily marts, draw the wallets down, build "
    "the invoices (finalized after the grace period), export the finalized ones and the new "
    "billing alerts.",
)

#: The partitioned jobs, upstream grain first: a period is backfilled in this order.
GRAIN_JOBS = (hourly_job, daily_job, monthly_job)
jobs = [catalog_job, *GRAIN_JOBS]
