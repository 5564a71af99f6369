"""``enforcement_file`` (hourly partitions): the enforcement file, replaced after every hourly
run. The format and its rules are in :mod:`orchestration.defs.enforcement.state`."""

import json
from datetime import UTC

from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from orchestration.defs.enforcement.state import enforcement_document
from orchestration.defs.partitions import hourly_partitions
from orchestration.defs.resources import S3UsageBucket, Warehouse

ENFORCEMENT_KEY = AssetKey(["enforcement", "enforcement_file"])


@asset(
    key=ENFORCEMENT_KEY,
    group_name="enforcement",
    description=(
        "The enforcement file a gateway reads: s3://<bucket>/<TOKENBILL_ENFORCEMENT_KEY> "
        "(one per environment), JSON listing every customer over a hard quota limit in the "
        "current billing period (fct_quota_usage) or out of prepaid credit on a wallet "
        "without overage, as of the end of the last rated hour, with count and checksum. "
        "Replaced after every hourly run by one PUT of the complete body (readers never see "
        "half of it). See README, 'Enforcement'."
    ),
    partitions_def=hourly_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    # What it reads: the quota usage and the rated charges of the hourly run, the wallets
    # and the ledger (booked at the monthly close; not in the hourly job, read as it stands).
    deps=[
        AssetKey(["marts", "fct_quota_usage"]),
        AssetKey(["marts", "fct_rated_charges_hourly"]),
        AssetKey(["billing", "wallet_ledger"]),
        AssetKey(["catalog", "wallets"]),
        AssetKey(["catalog", "wallet_grants"]),
    ],
    kinds={"s3", "duckdb"},
    owners=["team:billing"],
)
def enforcement_file(
    context: AssetExecutionContext, s3: S3UsageBucket, warehouse: Warehouse
) -> MaterializeResult:
    window_end = context.partition_time_window.end.astimezone(UTC).replace(tzinfo=None)
    key = s3.enforcement_key
    with warehouse.tables(read_only=True) as con:
        body = enforcement_document(con, window_end)
    # One PUT of the complete body: S3 replaces an object atomically.
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=body, ContentType="application/json")
    document = json.loads(body)
    reasons = [entry["reason"] for entry in document["blocked"]]
    context.log.info(
        f"enforcement file s3://{s3.bucket}/{key} as of {document['as_of']}: "
        f"{document['count']} blocked"
    )
    return MaterializeResult(
        metadata={
            "key": MetadataValue.text(key),
            "as_of": MetadataValue.text(document["as_of"]),
            "blocked": MetadataValue.int(document["count"]),
            "hard_limits": MetadataValue.int(reasons.count("hard_limit")),
            "out_of_credit": MetadataValue.int(reasons.count("out_of_credit")),
            "checksum": MetadataValue.text(document["checksum"]),
        }
    )
