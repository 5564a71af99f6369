"""``analyst_snapshot``: the last step of every job that writes the warehouse."""

from collections.abc import Sequence
from datetime import timedelta

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from orchestration.defs.alerts.assets import alerts_feed
from orchestration.defs.dbt.assets import dbt_catalog, dbt_daily, dbt_hourly, dbt_monthly
from orchestration.defs.enforcement.assets import enforcement_file
from orchestration.defs.ingestion.assets import raw_usage_events
from orchestration.defs.invoicing.assets import invoice_export
from orchestration.defs.publishing.snapshot import publish_snapshot
from orchestration.defs.rating.assets import pricing_catalog
from orchestration.defs.resources import WAREHOUSE_POOL, Warehouse
from orchestration.defs.wallets.ledger_asset import wallet_ledger

#: Every asset that writes the warehouse (or, like the export, ends a job): each job ends with
#: the analyst snapshot, downstream of all of them. A new such asset goes here.
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


def analyst_snapshot_asset(upstream: Sequence[AssetsDefinition]) -> AssetsDefinition:
    """The analysts' copy, downstream of every asset in ``upstream``.

    In a job it runs after the job's other steps (assets of other jobs are outside the job and
    do not hold it up), so every run that writes the warehouse ends by publishing it; a run
    that fails before its end publishes nothing, and analysts keep the previous copy.
    """

    @asset(
        name="analyst_snapshot",
        group_name="publishing",
        description=(
            "The analysts' read-only copy of the warehouse (TOKENBILL_ANALYST_DIR), published "
            "atomically at the end of every run that writes the warehouse: what analysts and "
            "the dbt docs read, so that their sessions never block a run. It is the state as "
            "of the last run that finished."
        ),
        deps=[key for assets_def in upstream for key in assets_def.keys],
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        owners=["team:billing"],
        # It follows the hourly runs: much older than an hour or two means runs stopped.
        freshness_policy=FreshnessPolicy.time_window(
            warn_window=timedelta(hours=2), fail_window=timedelta(hours=6)
        ),
    )
    def analyst_snapshot(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
        if warehouse.is_spark:  # analysts query the Spark tables (Thrift, a SQL warehouse)
            context.log.info("TOKENBILL_ENGINE=spark: no DuckDB copy to publish")
            return MaterializeResult(metadata={"engine": MetadataValue.text("spark")})
        published = publish_snapshot(warehouse)
        context.log.info(
            f"published {published.path} ({published.size_bytes / 2**20:.1f} MiB, "
            f"{published.tables} tables and views) in {published.seconds:.2f}s: "
            f"{published.method}, {published.written_bytes / 2**20:.1f} MiB written"
        )
        return MaterializeResult(
            metadata={
                "path": MetadataValue.path(str(published.path)),
                "size_bytes": MetadataValue.int(published.size_bytes),
                "seconds": MetadataValue.float(round(published.seconds, 3)),
                "method": MetadataValue.text(published.method),
                "written_bytes": MetadataValue.int(published.written_bytes),
                "tables_and_views": MetadataValue.int(published.tables),
                "open_it": MetadataValue.text(f"duckdb -readonly {published.path}"),
            }
        )

    return analyst_snapshot


analyst_snapshot = analyst_snapshot_asset(PIPELINE_ASSETS)
