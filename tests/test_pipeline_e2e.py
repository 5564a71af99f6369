"""End to end: a real S3 server, real Dagster runs on a real instance, a real dbt build.

The hand-made data set is in ``pipeline_data.py``; every expected number is derived there.
"""

from __future__ import annotations

import hashlib
import html
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import boto3
import duckdb
import pytest
from dagster import DagsterEventType, DagsterInstance, EventRecordsFilter, TimeWindow

from orchestration.definitions import build_defs
from orchestration.runner import run_job_range, run_period
from tests import pipeline_data as data
from tests.dbt_support import dbt_build

# Every test reads a period backfilled at every grain (built: ~1 min alone, rerun: several).
pytestmark = pytest.mark.slow

CATALOG_DIR = Path(__file__).parent / "fixtures" / "catalog_e2e"
#: Every run judges invoices as of this moment: October's invoices are past their grace period
#: (Nov 1 + 3 days), so they are finalized.
AS_OF = {"tokenbill/as_of": "2026-11-10T00:00:00"}
EXPORT_PREFIX = "exports/invoices/"

MEASURES = (
    "event_count, input_tokens, cached_input_tokens, cache_write_tokens, "
    "uncached_input_tokens, output_tokens, reasoning_tokens, total_tokens"
)
TABLES = (
    "raw.usage_events",
    "raw.usage_event_duplicates",
    "raw.usage_event_quarantine",
    "raw.ingested_objects",
    "raw.ingestion_audit",
    "marts.fct_token_usage_hourly",
    "marts.fct_token_usage_daily",
    "marts.fct_token_usage_monthly",
    "marts.fct_rated_charges_hourly",
    "marts.fct_rated_charges_daily",
    "marts.fct_rated_charges_monthly",
    "marts.fct_unpriced_usage",
    "marts.fct_margin_monthly",
    "marts.fct_subscription_fees",
    "marts.fct_wallet_ledger",
    "marts.fct_finalized_invoice_lines",
    "marts.fct_invoice_adjustments",
    "marts.fct_invoice_line_items",
    "marts.fct_invoices",
)


class Pipeline:
    """One warehouse + bucket + instance, and the means to run the graph over them."""

    def __init__(self, root, bucket: str):
        self.bucket = bucket
        self.warehouse = str(root / "warehouse.duckdb")
        self.defs = build_defs(
            bucket=bucket,
            prefix=data.PREFIX,
            warehouse_path=self.warehouse,
            catalog_dir=str(CATALOG_DIR),
        )
        (root / "home").mkdir()
        self.instance = DagsterInstance.local_temp(str(root / "home"))

    def run_period(self, start: datetime = data.PERIOD_START, end: datetime = data.PERIOD_END):
        return run_period(self.defs, start, end, self.instance, tags=AS_OF)

    def run(self, job: str, key: str):
        return run_job_range(self.defs, job, key, key, self.instance, tags=AS_OF)

    def exports(self) -> dict[str, bytes]:
        client = boto3.client("s3")
        listed = client.list_objects_v2(Bucket=self.bucket, Prefix=EXPORT_PREFIX)
        return {
            o["Key"]: client.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
            for o in listed.get("Contents", [])
        }

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(self.warehouse, read_only=True) as con:
            return con.sql(sql).fetchall()

    def snapshot(self) -> dict[str, list[tuple]]:
        return {t: self.query(f"select * from {t} order by all") for t in TABLES}


def _new_pipeline(tmp_path_factory, s3_endpoint: str) -> Pipeline:
    root = tmp_path_factory.mktemp("pipeline")
    bucket = f"tb-{root.name.replace('_', '-').lower()}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    data.upload(client, bucket)
    return Pipeline(root, bucket)


@pytest.fixture(scope="module")
def built(tmp_path_factory, s3_endpoint) -> Pipeline:
    """The hand-made period, backfilled once at every grain."""
    pipeline = _new_pipeline(tmp_path_factory, s3_endpoint)
    runs = pipeline.run_period()
    assert [r.result.success for r in runs] == [True, True, True, True]
    return pipeline


def test_audit_counts_every_line_of_each_hour(built):
    assert built.query(
        "select strftime(partition_hour, '%d %H'), object_count, unreadable_object_count, "
        "lines_read, valid_count, duplicate_count, quarantined_count "
        "from raw.ingestion_audit where object_count > 0 order by 1"
    ) == [
        ("05 07", 2, 0, 10, 5, 1, 4),
        ("05 08", 3, 2, 2, 2, 0, 0),
        ("06 00", 1, 0, 1, 1, 0, 0),
    ]
    # Hours with no objects are audited too, as zeros: 48 hours in the period.
    assert built.query("select count(*), sum(lines_read) from raw.ingestion_audit") == [(48, 13)]


def test_quarantine_names_object_line_and_reason(built):
    rows = built.query(
        "select split_part(source_key, '/', 4), line_number, event_id, reason_codes "
        "from raw.usage_event_quarantine order by all"
    )
    assert rows == [
        ("a.jsonl", 4, None, ["invalid_json"]),
        ("a.jsonl", 6, "e4", ["negative_count"]),
        ("b.jsonl.gz", 3, "e7", ["subset_invariant_broken"]),
        ("b.jsonl.gz", 4, "e8", ["timestamp_outside_hour"]),
        ("corrupt.jsonl.gz", None, None, ["unreadable_object"]),
        ("readme.txt", None, None, ["unsupported_format"]),
    ]
    (detail,) = built.query(
        "select reason_detail from raw.usage_event_quarantine where event_id = 'e4'"
    )[0]
    assert detail == 'input_tokens="-5": negative_count, expected an integer >= 0'


def test_duplicate_points_at_the_first_occurrence(built):
    assert built.query(
        "select split_part(source_key, '/', 4), line_number, event_id, "
        "split_part(first_source_key, '/', 4), first_line_number, is_conflicting "
        "from raw.usage_event_duplicates"
    ) == [("a.jsonl", 3, "e1", "a.jsonl", 1, False)]


def test_landed_events_are_typed_with_unknown_fields_in_metadata(built):
    assert built.query(
        "select event_id, strftime(event_ts, '%Y-%m-%d %H:%M:%S.%f'), input_tokens, "
        "cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, status, "
        "attempt, metadata from raw.usage_events where event_id in ('e2', 'e3', 'e5') "
        "order by event_id"
    ) == [
        ("e2", "2026-10-05 07:02:00.250000", 500, None, 100, 50, None, "success", 1, None),
        (
            "e3",
            "2026-10-05 07:30:00.000000",
            300,
            None,
            None,
            30,
            10,
            "success",
            1,
            '{"team":"search","sdk_version":"1.2.3"}',
        ),
        ("e5", "2026-10-05 07:10:00.000000", 0, None, None, 0, None, "failed", 1, None),
    ]


def test_hourly_mart_has_exact_totals(built):
    assert built.query(
        f"select strftime(usage_hour, '%d %H'), customer_id, feature, model, status, {MEASURES} "
        "from marts.fct_token_usage_hourly order by all"
    ) == [
        ("05 07", "cus_a", "chat", "gpt-4o", "success", 2, 1500, 200, 100, 1200, 150, 0, 1650),
        ("05 07", "cus_b", "agent", "claude-sonnet-4-5", "failed", 1, 0, 0, 0, 0, 0, 0, 0),
        (
            "05 07", "cus_b", "agent", "claude-sonnet-4-5", "success",
            2, 1000, 300, 100, 600, 100, 10, 1100,
        ),
        ("05 08", "cus_a", "chat", "gpt-4o", "success", 1, 2000, 1000, 0, 1000, 200, 0, 2200),
        (
            "05 08", "cus_a", "code-assist", "gpt-4o-mini", "success",
            1, 4000, 0, 0, 4000, 400, 0, 4400,
        ),
        ("06 00", "cus_a", "chat", "gpt-4o", "success", 1, 100, 0, 0, 100, 10, 0, 110),
    ]  # fmt: skip


def test_daily_and_monthly_marts_roll_up_exactly(built):
    assert built.query(
        "select usage_date::varchar, customer_id, sum(event_count), sum(input_tokens), "
        "sum(total_tokens) from marts.fct_token_usage_daily group by all order by all"
    ) == [
        ("2026-10-05", "cus_a", 4, 7500, 8250),
        ("2026-10-05", "cus_b", 3, 1000, 1100),
        ("2026-10-06", "cus_a", 1, 100, 110),
    ]
    sums = ", ".join(f"sum({m})" for m in MEASURES.split(", "))
    assert built.query(
        f"select usage_month::varchar, customer_id, {sums} "
        "from marts.fct_token_usage_monthly group by all order by all"
    ) == [
        ("2026-10-01", "cus_a", 5, 7600, 1200, 100, 6300, 760, 0, 8360),
        ("2026-10-01", "cus_b", 3, 1000, 300, 100, 600, 100, 10, 1100),
    ]


def test_range_backfill_is_one_run_and_one_dbt_build_per_grain(built):
    runs = [r for r in built.instance.get_runs() if r.job_name != "catalog_job"]
    assert sorted((r.job_name, r.tags["dagster/asset_partition_range_start"],
                   r.tags["dagster/asset_partition_range_end"]) for r in runs) == [
        ("daily_usage_job", "2026-10-05", "2026-10-06"),
        ("hourly_usage_job", "2026-10-05-00:00", "2026-10-06-23:00"),
        ("monthly_usage_job", "2026-10-01", "2026-10-01"),
    ]  # fmt: skip
    for run in runs:
        logs = built.instance.all_logs(run.run_id)
        dbt_commands = [e for e in logs if "Finished dbt command" in (e.user_message or "")]
        assert len(dbt_commands) == 1, run.job_name


def test_usage_is_rated_at_catalog_prices_with_provider_cost(built):
    rows = built.query(
        "select strftime(usage_hour, '%d %H'), customer_id, price_id, quantity, amount, "
        "provider_cost, currency from marts.fct_rated_charges_hourly order by all"
    )
    d = Decimal
    assert rows == [
        ("05 07", "cus_a", "gpt-4o-cache-write", 100, d("0.0003125"), d("0.00015625"), "USD"),
        ("05 07", "cus_a", "gpt-4o-cached", 200, d("0.00025"), d("0.000125"), "USD"),
        ("05 07", "cus_a", "gpt-4o-output", 150, d("0.0015"), d("0.00075"), "USD"),
        ("05 07", "cus_a", "gpt-4o-uncached", 1200, d("0.003"), d("0.0015"), "USD"),
        ("05 07", "cus_b", "sonnet-cache-write", 100, d("0.000375"), d("0.0001875"), "USD"),
        ("05 07", "cus_b", "sonnet-cached", 300, d("0.00009"), d("0.000045"), "USD"),
        ("05 07", "cus_b", "sonnet-output", 100, d("0.0015"), d("0.00075"), "USD"),
        ("05 07", "cus_b", "sonnet-uncached", 600, d("0.0018"), d("0.0009"), "USD"),
        ("05 08", "cus_a", "gpt-4o-cached", 1000, d("0.00125"), d("0.000625"), "USD"),
        ("05 08", "cus_a", "gpt-4o-output", 200, d("0.002"), d("0.001"), "USD"),
        ("05 08", "cus_a", "gpt-4o-uncached", 1000, d("0.0025"), d("0.00125"), "USD"),
        ("05 08", "cus_a", "mini-output", 400, d("0.00024"), d("0.00012"), "USD"),
        ("05 08", "cus_a", "mini-uncached", 4000, d("0.0006"), d("0.0003"), "USD"),
        ("06 00", "cus_a", "gpt-4o-output", 10, d("0.0001"), d("0.00005"), "USD"),
        ("06 00", "cus_a", "gpt-4o-uncached", 100, d("0.00025"), d("0.000125"), "USD"),
    ]
    assert built.query("select count(*) from marts.fct_unpriced_usage") == [(0,)]


def test_rated_rollups_and_margin_reconcile_with_hourly(built):
    hourly = built.query(
        "select customer_id, sum(amount), sum(provider_cost) "
        "from marts.fct_rated_charges_hourly group by all order by all"
    )
    assert hourly == [
        ("cus_a", Decimal("0.0120025"), Decimal("0.00600125")),
        ("cus_b", Decimal("0.003765"), Decimal("0.0018825")),
    ]
    for table in ("marts.fct_rated_charges_daily", "marts.fct_rated_charges_monthly"):
        assert (
            built.query(
                f"select customer_id, sum(amount), sum(provider_cost) from {table} "
                "group by all order by all"
            )
            == hourly
        )
    assert built.query(
        "select customer_id, sum(revenue), sum(gross_margin), sum(failed_attempt_provider_cost) "
        "from marts.fct_margin_monthly group by all order by all"
    ) == [
        ("cus_a", Decimal("0.0120025"), Decimal("0.00600125"), Decimal(0)),
        ("cus_b", Decimal("0.003765"), Decimal("0.0018825"), Decimal(0)),
    ]


def test_platform_fee_of_a_full_month_is_not_prorated(built):
    assert built.query(
        "select subscription_id, billing_period_start::varchar, platform_fee_amount, "
        "minimum_spend_true_up from marts.fct_subscription_fees order by all"
    ) == [
        ("sub_a", "2026-10-01 00:00:00", Decimal(99), Decimal(0)),
        ("sub_b", "2026-10-01 00:00:00", Decimal(99), Decimal(0)),
        # 1000.5 yen a period: an amount charged as such, in whole yen, half away from zero.
        ("sub_j", "2026-10-01 00:00:00", Decimal(1001), Decimal(0)),
    ]


def test_checks_pass_including_dbt_tests(built):
    records = built.instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    )
    results = {
        (
            r.event_log_entry.dagster_event.event_specific_data.asset_key.to_user_string(),
            r.event_log_entry.dagster_event.event_specific_data.check_name,
        ): r.event_log_entry.dagster_event.event_specific_data.passed
        for r in records
    }
    assert results[("raw_usage_events", "lines_reconcile")] is True
    assert results[("marts/fct_token_usage_daily", "daily_reconciles_with_hourly")] is True
    assert results[("marts/fct_token_usage_monthly", "monthly_reconciles_with_daily")] is True
    assert results[("marts/fct_unpriced_usage", "all_usage_is_priced")] is True
    assert results[("marts/fct_rated_charges_daily", "rated_daily_reconciles_with_hourly")] is True
    # 13 lines, 4 quarantined: above the default 1% rate, so the WARN check fails.
    assert results[("raw_usage_events", "quarantine_rate")] is False
    assert all(passed for key, passed in results.items() if key[1] != "quarantine_rate")


@pytest.fixture(scope="module")
def rerun(tmp_path_factory, s3_endpoint) -> dict:
    """A second pipeline: the period backfilled, backfilled again, then a late object added
    to hour 07 of Oct 5 and exactly that hour, its day and its month re-run."""
    pipeline = _new_pipeline(tmp_path_factory, s3_endpoint)
    pipeline.run_period()
    first, first_exports = pipeline.snapshot(), pipeline.exports()
    pipeline.run_period()
    second, second_exports = pipeline.snapshot(), pipeline.exports()
    data.upload(boto3.client("s3"), pipeline.bucket, {data.LATE_KEY: data.LATE_BODY})
    for job, key in (
        ("hourly_usage_job", "2026-10-05-07:00"),
        ("daily_usage_job", "2026-10-05"),
        ("monthly_usage_job", "2026-10-01"),
    ):
        assert pipeline.run(job, key).success
    late = pipeline.snapshot()
    assert pipeline.run("monthly_usage_job", "2026-10-01").success  # once more: books nothing
    return {
        "pipeline": pipeline,
        "first": first,
        "second": second,
        "late": late,
        "late_rerun": pipeline.snapshot(),
        "exports": (first_exports, second_exports),
    }


def test_rerunning_the_period_gives_identical_tables(rerun):
    assert rerun["second"] == rerun["first"]
    empty = {"marts.fct_unpriced_usage", "marts.fct_wallet_ledger", "marts.fct_invoice_adjustments"}
    assert all(rerun["first"][t] for t in TABLES if t not in empty)


def test_invoices_total_their_exact_amount_rounded_once(built):
    assert built.query(
        "select invoice_id, currency, subtotal, credits_applied, total_due, total_precise, "
        "status, finalized_at::varchar from marts.fct_invoices order by invoice_id"
    ) == [
        # 99 + 0.0120025 of usage = 99.0120025 -> 99.01.
        ("inv_sub_a_20261001", "USD", Decimal("99.01"), Decimal(0), Decimal("99.01"),
         Decimal("99.0120025"), "finalized", "2026-11-04 00:00:00"),
        ("inv_sub_b_20261001", "USD", Decimal("99.00"), Decimal(0), Decimal("99.00"),
         Decimal("99.003765"), "finalized", "2026-11-04 00:00:00"),
        # The fee of 1000.5 yen is 1001 yen (rounded where it is charged).
        ("inv_sub_j_20261001", "JPY", Decimal(1001), Decimal(0), Decimal(1001),
         Decimal(1001), "finalized", "2026-11-04 00:00:00"),
    ]  # fmt: skip
    # The fee is exact in cents and stays so; the usage lines round down to 0.00 and the one
    # cent still missing (9901 - 9900) goes to the largest remainder, the uncached input's
    # 0.575 cent.
    assert built.query(
        "select line_key, amount_precise, amount, amount_minor_units from "
        "marts.fct_invoice_line_items where invoice_id = 'inv_sub_a_20261001' order by line_key"
    ) == [
        ("platform_fee", Decimal(99), Decimal("99.00"), 9900),
        ("usage:gpt-4o-cache-write:cache_write", Decimal("0.0003125"), Decimal(0), 0),
        ("usage:gpt-4o-cached:cached_input", Decimal("0.0015"), Decimal(0), 0),
        ("usage:gpt-4o-output:output", Decimal("0.0036"), Decimal(0), 0),
        ("usage:gpt-4o-uncached:uncached_input", Decimal("0.00575"), Decimal("0.01"), 1),
        ("usage:mini-output:output", Decimal("0.00024"), Decimal(0), 0),
        ("usage:mini-uncached:uncached_input", Decimal("0.0006"), Decimal(0), 0),
    ]


def test_finalized_invoices_are_exported_once_per_line_with_stable_keys(rerun):
    first, second = rerun["exports"]
    assert sorted(first) == [
        f"exports/invoices/period=2026-10-01/inv_sub_{s}_20261001.{ext}"
        for s in "abj"
        for ext in ("html", "jsonl")
    ]
    assert second == first  # a re-export writes the same bytes: same lines, same keys
    period = {
        "start": int(datetime(2026, 10, 1, tzinfo=UTC).timestamp()),
        "end": int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()),
    }
    items = _items(first, "inv_sub_j_20261001")
    assert items == [
        {
            "idempotency_key": hashlib.md5(b"inv_sub_j_20261001:platform_fee").hexdigest(),
            "customer": "cus_StripeJ1",
            "amount": 1001,
            "currency": "jpy",
            "description": "Platform fee (pro-jpy)",
            "period": period,
            "metadata": {
                "invoice_id": "inv_sub_j_20261001",
                "tokenbill_customer_id": "cus_j",
                "subscription_id": "sub_j",
                "line_key": "platform_fee",
                "line_type": "platform_fee",
                "amount": "1001",
                "amount_precise": "1001",
                "invoice_total_due": "1001",
                "finalized_at": "2026-11-04T00:00:00Z",
            },
        }
    ]
    items_a = _items(first, "inv_sub_a_20261001")
    keys = [item["idempotency_key"] for item in items_a]
    assert len(keys) == len(set(keys)) == 7
    # Cents that add up to the invoice: 9900 + 1 = 9901 = total_due.
    assert sum(item["amount"] for item in items_a) == 9901
    # 2,300 uncached input tokens of gpt-4o at $2.50 per 1M: 0.00575 exact, 1 cent invoiced.
    # unit_amount_decimal is Stripe's: cents per unit of quantity (per token), 2.50 * 100 / 1M.
    uncached = next(i for i in items_a if i["metadata"]["line_key"].startswith("usage:gpt-4o-unc"))
    assert uncached == {
        "idempotency_key": hashlib.md5(
            b"inv_sub_a_20261001:usage:gpt-4o-uncached:uncached_input"
        ).hexdigest(),
        "customer": "cus_StripeA1",
        "amount": 1,
        "currency": "usd",
        "description": "GPT-4o input tokens, 2,300 tokens at $2.50 per 1M",
        "period": period,
        "metadata": {
            "invoice_id": "inv_sub_a_20261001",
            "tokenbill_customer_id": "cus_a",
            "subscription_id": "sub_a",
            "line_key": "usage:gpt-4o-uncached:uncached_input",
            "line_type": "usage",
            "amount": "0.01",
            "amount_precise": "0.00575",
            "invoice_total_due": "99.01",
            "finalized_at": "2026-11-04T00:00:00Z",
            "quantity": "2300",
            "unit": "1M",
            "unit_price": "2.50",
            "unit_amount_decimal": "0.00025",
        },
    }
    # Stripe's parameters only (and the header's key), metadata values all strings; a
    # customer without a stripe_customer_id is exported with "customer": null.
    for item in items_a + _items(first, "inv_sub_b_20261001"):
        assert set(item) == {
            "idempotency_key", "customer", "amount", "currency", "description", "period",
            "metadata",
        }  # fmt: skip
        assert all(isinstance(v, str) for v in item["metadata"].values())
    assert {item["customer"] for item in _items(first, "inv_sub_b_20261001")} == {None}


def _items(exports: dict[str, bytes], invoice_id: str) -> list[dict]:
    body = exports[f"{EXPORT_PREFIX}period=2026-10-01/{invoice_id}.jsonl"]
    return [json.loads(line) for line in body.decode().splitlines()]


def test_late_event_after_finalization_books_one_adjustment_and_never_twice(rerun):
    pipeline = rerun["pipeline"]
    # The finalized October invoice does not change...
    invoice = "select * from marts.fct_finalized_invoice_lines order by all"
    assert (
        rerun["late"][invoice.split(" from ")[1].split(" ")[0]]
        == rerun["second"]["marts.fct_finalized_invoice_lines"]
    )
    # ...the difference (40 uncached input and 4 output tokens of gpt-4o) is booked against
    # it, on sub_a's next draft invoice (November), once: re-running October books nothing.
    assert pipeline.query(
        "select original_invoice_id, target_invoice_id, line_key, amount_precise "
        "from marts.fct_invoice_adjustments order by line_key"
    ) == [
        ("inv_sub_a_20261001", "inv_sub_a_20261101", "usage:gpt-4o-output:output",
         Decimal("0.00004")),
        ("inv_sub_a_20261001", "inv_sub_a_20261101", "usage:gpt-4o-uncached:uncached_input",
         Decimal("0.0001")),
    ]  # fmt: skip
    assert rerun["late_rerun"] == rerun["late"]


def test_late_object_changes_exactly_its_hour_day_and_month(rerun):
    pipeline, before, after = rerun["pipeline"], rerun["second"], rerun["late"]

    def changed(table):
        return sorted(set(after[table]) ^ set(before[table]))

    hourly = changed("marts.fct_token_usage_hourly")
    assert [(r[0].strftime("%d %H"), r[1], r[9]) for r in hourly] == [
        ("05 07", "cus_a", 2),
        ("05 07", "cus_a", 3),
    ]
    assert {r[0].strftime("%d %H") for r in changed("marts.fct_rated_charges_hourly")} == {"05 07"}
    assert {r[0].isoformat() for r in changed("marts.fct_token_usage_daily")} == {"2026-10-05"}
    assert {r[0].isoformat() for r in changed("marts.fct_token_usage_monthly")} == {"2026-10-01"}
    assert pipeline.query(
        f"select {MEASURES} from marts.fct_token_usage_hourly "
        "where usage_hour = '2026-10-05 07:00' and customer_id = 'cus_a'"
    ) == [(3, 1540, 200, 100, 1240, 154, 0, 1694)]
    assert pipeline.query(
        "select sum(total_tokens) from marts.fct_token_usage_monthly where customer_id = 'cus_a'"
    ) == [(8360 + 44,)]
    assert pipeline.query(
        "select lines_read, valid_count from raw.ingestion_audit "
        "where partition_hour = '2026-10-05 07:00'"
    ) == [(11, 6)]


def test_adjustment_lands_as_one_line_on_the_next_draft_invoice(rerun, tmp_path):
    """November's invoices built with dbt directly (``--vars``, as by hand) as of Nov 10: a
    draft, carrying the adjustment. Built in a copy of the warehouse, so the other tests of
    ``rerun`` see the same tables whatever runs first."""
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect() as con:  # a consistent copy, whatever the file's write-ahead log
        con.execute(f"attach '{rerun['pipeline'].warehouse}' as source (read_only)")
        con.execute(f"attach '{warehouse}' as target")
        con.execute("copy from database source to target")
    november = TimeWindow(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    extra = {"as_of": AS_OF["tokenbill/as_of"], "invoice_grace_days": "3"}
    result = dbt_build(
        str(warehouse),
        tmp_path / "target",
        november,
        "fct_subscription_fees",
        "models/invoicing",
        settings=extra,
        by_hand=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        lines = con.execute(
            "select line_type, amount_precise, amount, status, original_invoice_id "
            "from marts.fct_invoice_line_items where invoice_id = 'inv_sub_a_20261101' "
            "order by line_type"
        ).fetchall()
    assert lines == [
        ("adjustment", Decimal("0.00014"), Decimal(0), "draft", "inv_sub_a_20261001"),
        ("platform_fee", Decimal(99), Decimal("99.00"), "draft", None),
    ]


#: Where the statement test leaves its screenshot for a person to look at.
STATEMENT_SCREENSHOT = Path(__file__).parents[1] / ".tokenbill" / "statement-test" / "statement.png"
#: Written into a copy of the page (the statement itself has no script): what overflows.
MEASURE = (
    "<script>document.body.setAttribute('data-fit', JSON.stringify({scroll: "
    "document.documentElement.scrollWidth, inner: window.innerWidth}));</script></body>"
)


def test_the_customer_statement_shows_totals_a_chart_and_fits_the_page(built, tmp_path):
    from tests.ui_support import _chromium, copy_for_humans, screenshot

    page = built.exports()[f"{EXPORT_PREFIX}period=2026-10-01/inv_sub_a_20261001.html"].decode()
    # Self-contained: no script, no stylesheet or image to fetch, nothing but inline SVG.
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert "<style>" in page and '<svg class=chart viewBox="0 0 720 220"' in page
    statement = tmp_path / "statement.html"
    statement.write_text(page)
    measured = tmp_path / "measured.html"
    measured.write_text(page.replace("</body>", MEASURE))

    # (headless Chromium's narrowest window is 500 px wide)
    for width in (1600, 500):  # a desktop window and a narrow one
        dom = _chromium(
            ["--dump-dom", f"--window-size={width},1000"],
            measured.as_uri(),
            tmp_path / f"profile-{width}",
            2000,
        )
        fit = json.loads(html.unescape(dom.split('data-fit="')[1].split('"')[0]))
        assert fit["inner"] == width, fit
        assert fit["scroll"] <= fit["inner"], f"horizontal overflow at {width}px: {fit}"
    # What a person reads: the invoice's totals, its lines with unit prices, and one bar per
    # day of October (usage on Oct 5 and 6 only).
    assert '<dd id="total-due">$99.01</dd>' in dom and "<dd>$0.00</dd>" in dom  # no credits
    assert "GPT-4o input tokens, 2,300 tokens at $2.50 per 1M" in dom
    assert "$2.50 per 1M" in dom and "Usage by model and feature" in dom
    assert dom.count('<rect class="bar"') == 31
    assert (
        "<title>Oct 5: $" in dom
        and "<title>Oct 6: $" in dom
        and "<title>Oct 7: $0.00, 0 tokens" in dom
    )

    png = screenshot(statement.as_uri(), tmp_path / "statement.png", tmp_path / "profile", 2000)
    copy_for_humans(png, STATEMENT_SCREENSHOT)
    content = png.read_bytes()
    assert content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) > 20_000
