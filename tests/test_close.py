"""Which checks block what, and the monthly close: end to end on the hand-made period.

- Unpriced usage (a customer the catalog does not know) never stops an hour: it lands, rolls
  up to its day and month, and ``all_usage_is_priced`` fails visibly without blocking. The
  monthly close of that month refuses to finalize: the run fails with one line naming the
  customer and the model, the invoices stay drafts, nothing is exported.
- Frozen is frozen: a real ``dbt build --full-refresh`` of the whole project leaves the
  finalized invoice lines and the booked adjustments byte-identical.

Real S3 (moto's server), real Dagster runs on a real instance, real dbt, as in
test_pipeline_e2e.py (whose Pipeline this reuses).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import boto3
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterEventType, EventRecordsFilter, TimeWindow

from orchestration.definitions import defs
from orchestration.runner import run_period
from tests import pipeline_data as data
from tests.dbt_support import dbt_build
from tests.test_pipeline_e2e import AS_OF, Pipeline, _new_pipeline

#: One call of a customer the catalog does not know, in hour 09 of Oct 5 (no other data there).
NEW_CUSTOMER_KEY = "dt=2026-10-05/hour=09/new.jsonl"
NEW_CUSTOMER_BODY = data.jsonl(
    data.event("n1", "2026-10-05T09:30:00Z", customer="cus_new", input_tokens=1000,
               output_tokens=100)
)  # fmt: skip


def _check_results(pipeline: Pipeline, run_id: str) -> dict[tuple[str, str], bool]:
    records = pipeline.instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    )
    return {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for r in records
        if r.event_log_entry.run_id == run_id
        for e in [r.event_log_entry.dagster_event.event_specific_data]
    }


def _failure_description(result) -> str:
    [failure] = result.get_step_failure_events()
    return failure.event_specific_data.user_failure_data.description


@pytest.fixture(scope="module")
def unpriced(tmp_path_factory, s3_endpoint) -> dict:
    pipeline = _new_pipeline(tmp_path_factory, s3_endpoint)
    data.upload(boto3.client("s3"), pipeline.bucket, {NEW_CUSTOMER_KEY: NEW_CUSTOMER_BODY})
    runs = run_period(
        pipeline.defs,
        data.PERIOD_START,
        data.PERIOD_END,
        pipeline.instance,
        tags=AS_OF,
        raise_on_error=False,
    )
    return {"pipeline": pipeline, "runs": {r.job_name: r.result for r in runs}}


def test_an_hour_with_unpriced_usage_lands_and_rolls_up_to_its_day_and_month(unpriced):
    pipeline, runs = unpriced["pipeline"], unpriced["runs"]
    assert runs["catalog_job"].success
    assert runs["hourly_usage_job"].success
    assert runs["daily_usage_job"].success
    # The check fails in red, and only that one: it does not block.
    checks = _check_results(pipeline, runs["hourly_usage_job"].run_id)
    assert checks[("marts/fct_unpriced_usage", "all_usage_is_priced")] is False
    assert [k for k, passed in checks.items() if not passed and k[1] != "quarantine_rate"] == [
        ("marts/fct_unpriced_usage", "all_usage_is_priced")
    ]
    assert pipeline.query(
        "select usage_hour::varchar, customer_id, model, meter, quantity, unpriced_reason "
        "from marts.fct_unpriced_usage order by meter"
    ) == [
        ("2026-10-05 09:00:00", "cus_new", "gpt-4o", "output", 100, "no_active_subscription"),
        ("2026-10-05 09:00:00", "cus_new", "gpt-4o", "uncached_input", 1000,
         "no_active_subscription"),
    ]  # fmt: skip
    # 1000 in + 100 out: in the hour, its day and its month.
    for table, period in (
        ("fct_token_usage_hourly", "usage_hour = '2026-10-05 09:00'"),
        ("fct_token_usage_daily", "usage_date = '2026-10-05'"),
        ("fct_token_usage_monthly", "usage_month = '2026-10-01'"),
    ):
        assert pipeline.query(
            f"select sum(total_tokens) from marts.{table} where customer_id = 'cus_new' "
            f"and {period}"
        ) == [(1100,)], table


def test_the_close_of_a_month_with_unpriced_usage_fails_naming_customer_and_model(unpriced):
    close = unpriced["runs"]["monthly_usage_job"]
    assert not close.success
    assert _failure_description(close) == (
        "close_has_no_unpriced_usage failed on fct_invoices (1 row(s)): customer_id=cus_new, "
        "models=gpt-4o, reasons=no_active_subscription, held_periods=2026-10-01, "
        "first_usage_hour=2026-10-05 09:00:00, last_usage_hour=2026-10-05 09:00:00; the held "
        "periods were not finalized (their invoices stay drafts) and nothing was exported: add "
        "the customers, subscriptions or prices to the catalog, run catalog_job, backfill the "
        "hours from first_usage_hour to last_usage_hour and their days, then re-run the month"
    )


def test_the_refused_close_finalizes_and_exports_nothing_but_builds_the_drafts(unpriced):
    pipeline = unpriced["pipeline"]
    assert pipeline.query("select count(*) from marts.fct_finalized_invoice_lines") == [(0,)]
    assert pipeline.query(
        "select invoice_id, status, total_due from marts.fct_invoices order by invoice_id"
    ) == [
        ("inv_sub_a_20261001", "draft", Decimal("99.01")),
        ("inv_sub_b_20261001", "draft", Decimal("99.00")),
        ("inv_sub_j_20261001", "draft", Decimal(1001)),
    ]
    assert pipeline.query(
        "select billing_period_start::varchar, customer_id, model, meter, quantity "
        "from marts.fct_invoice_holds order by meter"
    ) == [
        ("2026-10-01 00:00:00", "cus_new", "gpt-4o", "output", 100),
        ("2026-10-01 00:00:00", "cus_new", "gpt-4o", "uncached_input", 1000),
    ]
    assert pipeline.exports() == {}
    # The rest of the month closed: the rollup, margin and fees are there.
    assert pipeline.query(
        "select count(*) > 0 from marts.fct_subscription_fees where billing_period_start = "
        "'2026-10-01'"
    ) == [(True,)]


def test_money_checks_block_and_data_quality_checks_do_not():
    graph = defs.resolve_asset_graph()

    def blocking(asset: str, check: str) -> bool:
        return graph.get_check_spec(AssetCheckKey(AssetKey.from_user_string(asset), check)).blocking

    assert blocking("raw_usage_events", "lines_reconcile") is True
    assert blocking("raw_usage_events", "quarantine_rate") is False
    assert blocking("marts/fct_unpriced_usage", "all_usage_is_priced") is False
    assert blocking("marts/fct_invoices", "close_has_no_unpriced_usage") is True
    assert blocking("marts/fct_token_usage_daily", "daily_reconciles_with_hourly") is True
    assert blocking("marts/fct_invoice_line_items", "invoice_usage_equals_rated_charges") is True
    assert blocking("billing/wallet_ledger", "wallet_balance_identity") is True
    # Every other check blocks (ERROR severity), except these: the unpriced-usage signal and
    # the WARN checks (quarantine rate, unreported usage, unknown provider cost).
    assert sorted(
        (k.asset_key.to_user_string(), k.name)
        for k in graph.asset_check_keys
        if not graph.get_check_spec(k).blocking
    ) == [
        ("marts/fct_margin_monthly", "margin_cost_is_known"),
        ("marts/fct_rated_charges_hourly", "provider_cost_is_known"),
        ("marts/fct_unpriced_usage", "all_usage_is_priced"),
        ("raw_usage_events", "quarantine_rate"),
        ("raw_usage_events", "unreported_usage"),
    ]


FROZEN = ("marts.fct_finalized_invoice_lines", "marts.fct_invoice_adjustments")


def test_a_full_refresh_leaves_finalized_invoices_byte_identical(
    tmp_path_factory, s3_endpoint, tmp_path
):
    """October is closed, then a late event changes what its invoice would be (an adjustment
    is booked). A full refresh that rebuilt the frozen tables would re-freeze October with the
    late event and drop the adjustment."""
    pipeline = _new_pipeline(tmp_path_factory, s3_endpoint)
    assert all(r.result.success for r in pipeline.run_period())
    data.upload(boto3.client("s3"), pipeline.bucket, {data.LATE_KEY: data.LATE_BODY})
    for job, key in (
        ("hourly_usage_job", "2026-10-05-07:00"),
        ("daily_usage_job", "2026-10-05"),
        ("monthly_usage_job", "2026-10-01"),
    ):
        assert pipeline.run(job, key).success
    finalized = "select * from marts.fct_invoices where status = 'finalized' order by all"
    before = {t: pipeline.query(f"select * from {t} order by all") for t in FROZEN}
    before_invoices = pipeline.query(finalized)
    assert len(before["marts.fct_invoice_adjustments"]) == 2
    assert {r[0] for r in before["marts.fct_finalized_invoice_lines"]} == {
        "inv_sub_a_20261001", "inv_sub_b_20261001", "inv_sub_j_20261001"
    }  # fmt: skip

    # By hand, as an operator would rebuild October: `dbt build --full-refresh --vars ...`.
    october = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    result = dbt_build(
        pipeline.warehouse,
        tmp_path / "target",
        october,
        settings={"as_of": AS_OF["tokenbill/as_of"], "invoice_grace_days": "3"},
        by_hand=True,
        full_refresh=True,
    )

    assert result.returncode == 0, result.stdout[-3000:]
    assert {t: pipeline.query(f"select * from {t} order by all") for t in FROZEN} == before
    assert pipeline.query(finalized) == before_invoices
    # The rebuilt marts did rebuild, with the late event (8360 + 44 tokens, as in
    # test_pipeline_e2e): only the frozen tables were left as they were.
    assert pipeline.query(
        "select sum(total_tokens) from marts.fct_token_usage_monthly where customer_id = 'cus_a'"
    ) == [(8360 + 44,)]
