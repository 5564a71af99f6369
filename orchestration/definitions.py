"""The code location: assembles each domain's assets, jobs and resources. No logic here."""

from __future__ import annotations

from dagster import Definitions, define_asset_job, in_process_executor

from orchestration.defs.alerts.assets import alerts_feed
from orchestration.defs.dbt.assets import dbt_catalog, dbt_daily, dbt_hourly, dbt_monthly
from orchestration.defs.dbt.project import DBT_EXECUTABLE, tokenbill_dbt_project
from orchestration.defs.dbt.resource import TokenbillDbtCliResource
from orchestration.defs.enforcement.assets import enforcement_file
from orchestration.defs.ingestion.assets import raw_usage_events
from orchestration.defs.invoicing.assets import invoice_export
from orchestration.defs.operations.schedules import (
    daily_usage_schedule,
    hourly_usage_schedule,
    monthly_close_schedule,
    reclose_schedule,
)
from orchestration.defs.operations.sensors import late_data_sensor, rerate_sensor, rollup_sensor
from orchestration.defs.partitions import daily_partitions, hourly_partitions, monthly_partitions
from orchestration.defs.publishing.assets import analyst_snapshot_asset
from orchestration.defs.rating.assets import pricing_catalog
from orchestration.defs.rating.resources import PricingCatalogDir
from orchestration.defs.resources import S3UsageBucket, Warehouse
from orchestration.defs.wallets.ledger_asset import wallet_ledger
from orchestration.settings import env_or_default

#: Every asset that writes the warehouse (or, like the export, ends a job): each job ends with
#: the analyst snapshot, downstream of all of them.
PIPELINE_ASSETS = [
    pricing_catalog,
    dbt_catalog,
    raw_usage_events,
    dbt_hourly,
    enforcement_file,
    dbt_daily,
    wallet_ledger,
    dbt_monthly,
    invoice_export,
    alerts_feed,
]
analyst_snapshot = analyst_snapshot_asset(PIPELINE_ASSETS)

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


def build_defs(
    bucket: str | None = None,
    prefix: str | None = None,
    warehouse_path: str | None = None,
    catalog_dir: str | None = None,
    analyst_dir: str | None = None,
) -> Definitions:
    """The code location. Arguments override the environment (tests, the demo)."""
    return Definitions(
        assets=[*PIPELINE_ASSETS, analyst_snapshot],
        jobs=[catalog_job, hourly_job, daily_job, monthly_job],
        schedules=[
            hourly_usage_schedule,
            daily_usage_schedule,
            monthly_close_schedule,
            reclose_schedule,
        ],
        sensors=[late_data_sensor, rerate_sensor, rollup_sensor],
        # One process per run: the run worker executes the steps itself, so a killed worker
        # leaves no step process behind (and no step pays a Python start). The steps of a job
        # run one after another anyway (the warehouse pool has one slot).
        executor=in_process_executor,
        resources={
            "s3": S3UsageBucket(
                bucket=bucket or env_or_default("TOKENBILL_S3_BUCKET"),
                prefix=prefix if prefix is not None else env_or_default("TOKENBILL_S3_PREFIX"),
            ),
            "warehouse": Warehouse(
                path=warehouse_path or env_or_default("TOKENBILL_WAREHOUSE_PATH"),
                memory_limit=env_or_default("TOKENBILL_DUCKDB_MEMORY_LIMIT"),
                analyst_dir=analyst_dir or env_or_default("TOKENBILL_ANALYST_DIR"),
            ),
            "catalog_dir": PricingCatalogDir(
                path=catalog_dir or env_or_default("TOKENBILL_CATALOG_DIR")
            ),
            "dbt": TokenbillDbtCliResource(
                project_dir=tokenbill_dbt_project(),
                profiles_dir=str(tokenbill_dbt_project().profiles_dir),
                # dbt installed beside this interpreter (venv on PATH or not), in a process that
                # dies with the run worker (orchestration/defs/dbt/child.py).
                dbt_executable=str(DBT_EXECUTABLE),
            ),
        },
    )


defs = build_defs()
