"""``raw_usage_events``: one hour of S3 objects -> valid, duplicate and quarantined rows."""

import contextlib
import ctypes
import ctypes.util
import gc
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from contracts.usage_event import REASONS
from orchestration.defs.ingestion.landing import AUDIT_COUNTS, BackgroundLander
from orchestration.defs.ingestion.parsing import (
    HourInput,
    ObjectReadError,
    fetch_hours,
    piece_batches,
    route_hours,
)
from orchestration.defs.ingestion.progress import IngestionProgress
from orchestration.defs.ingestion.resources import IngestionSettings
from orchestration.defs.partitions import hourly_partitions
from orchestration.defs.resources import WAREHOUSE_POOL, S3UsageBucket, Warehouse
from orchestration.errors import explains_s3_errors

ASSET = "raw_usage_events"
#: Hours are routed and landed in batches of about this much decoded text (at least one
#: hour): large enough to amortise extraction and validation (~150k lines), small enough to
#: bound memory (a batch's frames take a few times its text, and two batches are held while
#: one lands) whatever the length of the range.
BATCH_BYTES = 64 * 1024 * 1024
#: Landing only appends row groups: DuckDB's cache of the growing table is not worth memory
#: that routing needs (a month of 10M events is ~500 MB of table).
LANDING_MEMORY_LIMIT = "512MB"
#: Decoded text fetched ahead of routing (at least two hours).
PREFETCH_BYTES = 64 * 1024 * 1024
AUDIT_COLUMNS = ("object_count", "unreadable_object_count", *AUDIT_COUNTS)


@asset(
    name=ASSET,
    group_name="ingestion",
    description=(
        "Usage events of one UTC hour read from S3 (<prefix>/dt=YYYY-MM-DD/hour=HH/), "
        "validated against the usage-event contract and landed in raw.usage_events. Every "
        "line also lands in exactly one of raw.usage_event_duplicates or "
        "raw.usage_event_quarantine when it is not valid; raw.ingestion_audit counts them."
    ),
    partitions_def=hourly_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    kinds={"s3", "duckdb", "polars"},
    owners=["team:billing"],
    check_specs=[
        AssetCheckSpec(
            "lines_reconcile",
            asset=ASSET,
            description="Every line read is valid, duplicate or quarantined: "
            "lines_read = valid + duplicates + quarantined, per hour. Blocking: a line that "
            "went nowhere or twice fails the run and nothing downstream is built from it.",
            blocking=True,
        ),
        AssetCheckSpec(
            "quarantine_rate",
            asset=ASSET,
            description="The quarantined share of lines stays below "
            "TOKENBILL_QUARANTINE_WARN_RATE (a WARN: the producer needs attention).",
        ),
        AssetCheckSpec(
            "unreported_usage",
            asset=ASSET,
            description="No attempt arrived without usage (usage_not_reported: a provider "
            "response with no usage object, e.g. a stream cancelled before its final usage "
            "chunk). A WARN: such an attempt's usage is unknown, not zero; it is quarantined "
            "(never billed as 0 tokens) until its usage is sent under the same event_id.",
        ),
    ],
)
@explains_s3_errors
def raw_usage_events(
    context: AssetExecutionContext,
    s3: S3UsageBucket,
    warehouse: Warehouse,
    ingestion: IngestionSettings,
) -> MaterializeResult:
    window = context.partition_time_window
    hours = []
    hour = window.start
    while hour < window.end:
        hours.append(hour)
        hour += timedelta(hours=1)

    client = s3.client()
    prefixes = [(h, s3.hour_prefix(h.strftime("%Y-%m-%d"), h.hour)) for h in hours]
    reasons, samples, formats = Counter(), [], Counter()
    progress = IngestionProgress(hours, context.log.info)
    max_lines, max_bytes = ingestion.max_lines(), ingestion.max_bytes()
    fetched = fetch_hours(
        client,
        s3.bucket,
        prefixes,
        ahead_bytes=PREFETCH_BYTES,
        retry=s3.body_retry(),
        hold_bytes=max_bytes,
    )
    # The warehouse is opened by the lander for each batch it writes, and only then: S3 is
    # read and lines are parsed with the file free for analysts and the late-data sensor.
    with BackgroundLander(
        lambda: warehouse.connect(memory_limit=LANDING_MEMORY_LIMIT), sink=ingestion.lake_sink()
    ) as lander:

        def observed(items: Iterator[HourInput]) -> Iterator[HourInput]:
            for item in items:
                progress.hour_read()
                progress.observe(lander.audits)
                yield item

        seen: dict = {}  # the winners of an hour larger than a batch, across its pieces
        try:
            for batch_inputs in piece_batches(observed(fetched), max_lines, max_bytes):
                batch = route_hours(batch_inputs, warehouse.memory_limit, seen)
                lander.put(batch)
                codes = batch.quarantine["reason_codes"].explode(empty_as_null=False)
                reasons.update(dict(codes.value_counts().iter_rows()))
                for shape, records, valid in batch.formats.select(
                    "source_format", "records_read", "valid_count"
                ).iter_rows():
                    formats[(shape, "records")] += records
                    formats[(shape, "valid")] += valid
                if len(samples) < 5 and batch.quarantine.height:
                    samples.extend(batch.quarantine.head(5 - len(samples)).to_dicts())
                del batch, batch_inputs  # the lander holds the batch while it writes
                progress.observe(lander.audits)
        except ObjectReadError as exc:
            # The network or S3, not the data: one line saying which object, where, and what
            # to do (the batches already landed stay; a re-run replaces them).
            raise Failure(description=str(exc)) from None
    progress.finish(lander.audits)
    gc.collect()
    release_freed_memory()

    audit = pl.concat(lander.audits)
    totals = {c: int(audit[c].sum()) for c in AUDIT_COLUMNS}
    broken = audit.filter(
        pl.col("lines_read")
        != pl.col("valid_count") + pl.col("duplicate_count") + pl.col("quarantined_count")
    )
    rate = totals["quarantined_count"] / totals["lines_read"] if totals["lines_read"] else 0.0
    warn_rate = ingestion.warn_rate()
    metadata = {
        **{k: MetadataValue.int(v) for k, v in totals.items()},
        "dagster/row_count": MetadataValue.int(totals["valid_count"]),
        "hours": MetadataValue.int(len(hours)),
        "quarantine_rate": MetadataValue.float(rate),
        "quarantine_by_reason": MetadataValue.md(_reason_table(reasons)),
        "records_by_format": MetadataValue.md(_format_table(formats)),
    }
    if samples:
        metadata["quarantine_sample"] = MetadataValue.md(_sample_table(samples))
    return MaterializeResult(
        metadata=metadata,
        check_results=[
            AssetCheckResult(
                check_name="lines_reconcile",
                passed=broken.height == 0,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "hours_checked": len(hours),
                    "hours_not_reconciling": broken.height,
                    "lines_read": totals["lines_read"],
                    "valid+duplicates+quarantined": totals["valid_count"]
                    + totals["duplicate_count"]
                    + totals["quarantined_count"],
                },
            ),
            AssetCheckResult(
                check_name="quarantine_rate",
                passed=rate <= warn_rate,
                severity=AssetCheckSeverity.WARN,
                metadata={"quarantine_rate": rate, "threshold": warn_rate},
            ),
            AssetCheckResult(
                check_name="unreported_usage",
                passed=totals["unreported_usage_count"] == 0,
                severity=AssetCheckSeverity.WARN,
                metadata={"unreported_usage_count": totals["unreported_usage_count"]},
            ),
        ],
    )


def release_freed_memory() -> None:
    """Hand the heap that routing freed back to the operating system.

    glibc's allocator keeps freed blocks for reuse: after a month's ingestion the process holds
    most of its peak (hundreds of MB) while dbt, a process of its own, runs next. Trimming
    returns it, so the run's memory is ingestion's peak or dbt's, not both. No-op off glibc.
    """
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(libc_name).malloc_trim(0)


def _reason_table(reasons: Counter) -> str:
    if not reasons:
        return "nothing quarantined"
    rows = [
        f"| {code} | {n:,} | {REASONS[code].what} | {REASONS[code].remedy} |"
        for code, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return "| reason | lines | what | what to do |\n|---|---|---|---|\n" + "\n".join(rows)


def _format_table(formats: Counter) -> str:
    """Records per producer shape (see orchestration/defs/ingestion/shapes.py)."""
    shapes = sorted({shape for shape, _ in formats})
    if not shapes:
        return "no records"
    rows = [
        f"| {shape} | {formats[(shape, 'records')]:,} | {formats[(shape, 'valid')]:,} |"
        for shape in shapes
    ]
    return "| format | records | valid |\n|---|---|---|\n" + "\n".join(rows)


def _sample_table(samples: list[dict]) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")[:120]

    rows = [
        f"| {cell(s['source_key'])} | {s['line_number']} | {cell(s['reason_detail'])} |"
        for s in samples
    ]
    return "| object | line | detail |\n|---|---|---|\n" + "\n".join(rows)
