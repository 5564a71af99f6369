"""``invoice_export``: finalized invoices of a month, written to S3 for the payment provider
(a Stripe invoice-item feed) and for the customer (an HTML statement per invoice)."""

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
from orchestration.defs.invoicing.statement import statement_documents
from orchestration.defs.partitions import monthly_partitions
from orchestration.defs.resources import S3UsageBucket, Warehouse


@asset(
    name="invoice_export",
    group_name="invoicing",
    description=(
        "Finalized invoices of the billing periods starting in the month, under "
        "<TOKENBILL_EXPORT_PREFIX>/period=YYYY-MM-DD/ in the usage bucket: <invoice>.jsonl, "
        "Stripe invoice items (POST /v1/invoiceitems parameters, integer amount in minor "
        "units, a stable idempotency key per line), and <invoice>.html, the customer's "
        "statement. Re-exporting rewrites the same bytes. Draft invoices are not exported."
    ),
    partitions_def=monthly_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    # Everything the feed and the statements read (export.py, statement.py): an asset backfill
    # runs it only once they are built.
    deps=[
        AssetKey(["marts", "fct_invoices"]),
        AssetKey(["marts", "fct_invoice_line_items"]),
        AssetKey(["marts", "dim_customers"]),
        AssetKey(["marts", "fct_rated_charges_daily"]),
        AssetKey(["marts", "fct_wallet_balances"]),
    ],
    kinds={"s3", "duckdb"},
    owners=["team:billing"],
)
def invoice_export(
    context: AssetExecutionContext, s3: S3UsageBucket, warehouse: Warehouse
) -> MaterializeResult:
    window = context.partition_time_window
    start, end = (w.replace(tzinfo=None) for w in (window.start, window.end))
    prefix = s3.export_prefix
    with warehouse.tables(read_only=True) as con:
        documents = invoice_documents(con, start, end, prefix)
        statements = statement_documents(con, start, end, prefix)
    client = s3.client()
    totals: dict[str, int] = defaultdict(int)
    lines = 0
    without_customer: set[str] = set()
    for key, body in sorted(documents.items()):
        client.put_object(Bucket=s3.bucket, Key=key, Body=body, ContentType="application/x-ndjson")
        for line in body.decode().splitlines():
            item = json.loads(line)
            totals[item["currency"]] += item["amount"]
            lines += 1
            if item["customer"] is None:
                without_customer.add(item["metadata"]["tokenbill_customer_id"])
    for key, body in sorted(statements.items()):
        client.put_object(
            Bucket=s3.bucket, Key=key, Body=body, ContentType="text/html; charset=utf-8"
        )
    context.log.info(
        f"exported {len(documents)} invoice(s) and {len(statements)} statement(s) "
        f"to s3://{s3.bucket}/{prefix.strip('/')}/"
    )
    if without_customer:
        context.log.warning(
            f"{len(without_customer)} customer(s) have no stripe_customer_id in customers.yml, "
            'so their exported lines carry "customer": null '
            f"({', '.join(sorted(without_customer))}); "
            "add the payment provider's id to customers.yml, run catalog_job, then re-run "
            "this month's invoice_export"
        )
    return MaterializeResult(
        metadata={
            "invoices": MetadataValue.int(len(documents)),
            "lines": MetadataValue.int(lines),
            "statements": MetadataValue.int(len(statements)),
            "customers_without_provider_id": MetadataValue.int(len(without_customer)),
            "totals_minor_units": MetadataValue.md(
                "| currency | total (minor units) |\n|---|---|\n"
                + "\n".join(f"| {c} | {t:,} |" for c, t in sorted(totals.items()))
            ),
            "keys": MetadataValue.md("\n".join(f"- {k}" for k in sorted(documents)[:20])),
        }
    )
