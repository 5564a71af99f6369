"""``invoice_export``: finalized invoices of a month, written to S3 for the payment provider."""

import json
from collections import defaultdict

from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from orchestration.defs.invoicing.export import invoice_documents
from orchestration.defs.partitions import monthly_partitions
from orchestration.defs.resources import S3UsageBucket, Warehouse
from orchestration.settings import setting


@asset(
    name="invoice_export",
    group_name="invoicing",
    description=(
        "Finalized invoices of the billing periods starting in the month, as JSON Lines of "
        "Stripe-style invoice items under <TOKENBILL_EXPORT_PREFIX>/period=YYYY-MM-DD/ in the "
        "usage bucket, with a stable idempotency key per line. Re-exporting rewrites the same "
        "bytes. Draft invoices are not exported."
    ),
    partitions_def=monthly_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    deps=[AssetKey(["marts", "fct_invoices"]), AssetKey(["marts", "fct_invoice_line_items"])],
    kinds={"s3", "duckdb"},
    owners=["team:billing"],
)
def invoice_export(
    context: AssetExecutionContext, s3: S3UsageBucket, warehouse: Warehouse
) -> MaterializeResult:
    window = context.partition_time_window
    start, end = (w.replace(tzinfo=None) for w in (window.start, window.end))
    with warehouse.connect(read_only=True) as con:
        documents = invoice_documents(con, start, end, setting("TOKENBILL_EXPORT_PREFIX"))
    client = s3.client()
    totals: dict[str, int] = defaultdict(int)
    lines = 0
    for key, body in sorted(documents.items()):
        client.put_object(Bucket=s3.bucket, Key=key, Body=body, ContentType="application/x-ndjson")
        for line in body.decode().splitlines():
            item = json.loads(line)
            totals[item["currency"]] += item["amount"]
            lines += 1
    context.log.info(f"exported {len(documents)} invoice(s) to s3://{s3.bucket}")
    return MaterializeResult(
        metadata={
            "invoices": MetadataValue.int(len(documents)),
            "lines": MetadataValue.int(lines),
            "totals_minor_units": MetadataValue.md(
                "| currency | total (minor units) |\n|---|---|\n"
                + "\n".join(f"| {c} | {t:,} |" for c, t in sorted(totals.items()))
            ),
            "keys": MetadataValue.md("\n".join(f"- {k}" for k in sorted(documents)[:20])),
        }
    )
