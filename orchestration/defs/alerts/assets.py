"""``alerts_feed``: new billing alerts to S3, each once (see feed.py)."""

from datetime import UTC, datetime

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from orchestration.defs.alerts.feed import export_new_alerts
from orchestration.defs.resources import WAREHOUSE_POOL, S3UsageBucket, Warehouse


@asset(
    key=["alerts", "alerts_feed"],
    group_name="alerts",
    description=(
        "Billing alerts (marts.fct_billing_alerts: low balance, allowance, low runway, usage "
        "spikes, and any other type the mart gains) not exported before, as one JSON Lines "
        "object under <TOKENBILL_ALERTS_PREFIX>/alerted_from=YYYY-MM-DD/ in the usage bucket, "
        "for a webhook sender. billing.exported_alerts records every exported id (append-only): "
        "each alert is exported once, however often this runs."
    ),
    deps=[AssetKey(["marts", "fct_billing_alerts"])],
    pool=WAREHOUSE_POOL,
    kinds={"s3", "duckdb"},
    owners=["team:billing"],
)
def alerts_feed(
    context: AssetExecutionContext, s3: S3UsageBucket, warehouse: Warehouse
) -> MaterializeResult:
    prefix = s3.alerts_prefix
    client = s3.client()

    def put(key: str, body: bytes) -> None:
        client.put_object(Bucket=s3.bucket, Key=key, Body=body, ContentType="application/x-ndjson")

    with warehouse.tables() as con:
        if not con.relation_exists("marts", "fct_billing_alerts"):
            context.log.info("no alerts yet: marts.fct_billing_alerts is built by the monthly run")
            return MaterializeResult(metadata={"alerts": MetadataValue.int(0)})
        written = export_new_alerts(con, put, prefix, datetime.now(UTC).replace(tzinfo=None))
        exported_total = con.rows("select count(*) from billing.exported_alerts")[0][0]
    if written is None:
        context.log.info("no new alerts to export")
        return MaterializeResult(
            metadata={
                "alerts": MetadataValue.int(0),
                "exported_total": MetadataValue.int(exported_total),
            }
        )
    context.log.info(
        f"exported {len(written.alert_ids)} new alert(s) to s3://{s3.bucket}/{written.key}"
    )
    return MaterializeResult(
        metadata={
            "alerts": MetadataValue.int(len(written.alert_ids)),
            "exported_total": MetadataValue.int(exported_total),
            "key": MetadataValue.text(written.key),
            "by_type": MetadataValue.md(
                "| alert_type | alerts |\n|---|---|\n"
                + "\n".join(f"| {t} | {n:,} |" for t, n in sorted(written.by_type.items()))
            ),
        }
    )
