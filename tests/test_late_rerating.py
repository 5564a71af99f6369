"""Late data re-rates what it changes: a late event early in a month moves every later hour of
its billing period to another tier; late_data_sensor re-runs the late hour, rerate_sensor then
re-rates the later hours (rating only), and the month equals a clean build. Real S3, real
runs, a real warehouse; every number is worked out by hand below.

The catalog prices gpt-4o per 1K tokens: output by **volume** (the first 10 units at 50, the
whole quantity at 30 beyond) and uncached input **graduated** (the first 10 units at 2, the
rest at 1). cus_a has a wallet of 1000.

    hour            output  input   output charge           input charge
    Oct 1 01:00     6K      6K      6 x 50 = 300            6 x 2 = 12
    Oct 1 03:00     1K      1K      7 x 50 - 300 = 50       2
      (late)
    Oct 2 05:00     4K      4K      before the late event:  10 x 50 - 300 = 200;  8
                                    after:  11 x 30 - 350 = -20;  10 x 2 + 1 - 14 = 7

Month: output 330, input 21 (stale, without re-rating Oct 2 05:00: 550 and 22).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster import DagsterInstance, build_sensor_context, materialize

from orchestration.definitions import build_defs
from orchestration.defs.operations import sensors as ops_sensors
from orchestration.defs.operations.schedules import RANGE_END_TAG, RANGE_START_TAG, TRIGGER_TAG
from orchestration.defs.operations.sensors import (
    FINGERPRINT_TAG,
    RERATE_ASSETS,
    rerate_run_key,
    rollup_run_key,
)
from orchestration.defs.resources import Warehouse
from orchestration.defs.wallets.ledger_asset import wallet_ledger
from orchestration.defs.wallets.ledger_table import LEDGER_ORDER, LEDGER_ORDER_DESC
from orchestration.runner import run_job_range
from tests import pipeline_data as data

# A whole period, a late object and the sensors' re-runs: minutes.
pytestmark = pytest.mark.slow

D = Decimal
FIRST, LAST = "2026-10-01-00:00", "2026-10-02-23:00"
LATE_HOUR = "2026-10-01-03:00"
TIERS = {
    "volume": [{"up_to": 10, "unit_price": "50"}, {"up_to": None, "unit_price": "30"}],
    "graduated": [{"up_to": 10, "unit_price": "2"}, {"up_to": None, "unit_price": "1"}],
}


def _price(price_id: str, meter: str, pricing: str | None = None, unit_price: str = "0"):
    version = {"effective_from": "2026-01-01"}
    if pricing:
        version["tiers"] = TIERS[pricing]
    else:
        version["unit_price"] = unit_price
    return {
        "price_id": price_id,
        "meter": meter,
        "selector": {"model": "gpt-4o"},
        "unit": "1K",
        **({"pricing": pricing} if pricing else {}),
        "versions": [version],
    }


CATALOG = {
    "customers.yml": {"customers": [{"customer_id": "cus_a", "name": "A", "currency": "USD"}]},
    "plans.yml": {"plans": [{"plan_id": "p", "name": "P", "currency": "USD", "prices": [
        _price("out", "output", "volume"),
        _price("in", "uncached_input", "graduated"),
        _price("cached", "cached_input"),
        _price("write", "cache_write"),
    ]}]},
    "subscriptions.yml": {"subscriptions": [
        {"subscription_id": "sub_a", "customer_id": "cus_a", "plan_id": "p", "start": "2026-01-01"}
    ]},
    "wallets.yml": {"wallets": [{"wallet_id": "wal_a", "customer_id": "cus_a", "currency": "USD",
        "grants": [{"grant_id": "g", "kind": "purchased", "amount": "1000",
                    "granted_at": "2026-10-01"}]}]},
}  # fmt: skip


def _usage(event_id: str, ts: str, kilo: int) -> bytes:
    return data.jsonl(data.event(event_id, ts, input_tokens=kilo * 1000, output_tokens=kilo * 1000))


ON_TIME = {
    "dt=2026-10-01/hour=01/a.jsonl": _usage("u1", "2026-10-01T01:30:00Z", 6),
    "dt=2026-10-02/hour=05/a.jsonl": _usage("u2", "2026-10-02T05:30:00Z", 4),
}
LATE = {"dt=2026-10-01/hour=03/late.jsonl": _usage("u3", "2026-10-01T03:10:00Z", 1)}


def _catalog_dir(root: Path) -> Path:
    directory = root / "catalog"
    directory.mkdir()
    for name, doc in CATALOG.items():
        (directory / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    card = Path(__file__).parent / "fixtures" / "catalog_e2e" / "provider_costs.csv"
    (directory / "provider_costs.csv").write_text(card.read_text())
    return directory


def _rated(warehouse: str, sql: str) -> list[tuple]:
    with duckdb.connect(warehouse, read_only=True) as con:
        return con.execute(sql).fetchall()


MONTH_BY_PRICE = (
    "select price_id, sum(amount) from marts.fct_rated_charges_hourly "
    "where usage_hour >= '2026-10-01' and usage_hour < '2026-11-01' and amount <> 0 "
    "group by 1 order by 1"
)


def _sensor_context(defs, instance, cursor=None):
    return build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    )


@pytest.fixture
def clean_month(tmp_path, s3_client, bucket, instance):
    """The month built with the late event on time: what re-rating must reproduce."""
    root = tmp_path / "clean"
    root.mkdir()
    warehouse = str(root / "warehouse.duckdb")
    data.upload(s3_client, bucket, {**ON_TIME, **LATE})
    defs = build_defs(bucket, data.PREFIX, warehouse, str(_catalog_dir(root)))
    assert run_job_range(defs, "catalog_job", None, None, instance).success
    assert run_job_range(defs, "hourly_usage_job", FIRST, LAST, instance).success
    return _rated(warehouse, MONTH_BY_PRICE)


def test_late_data_rerates_the_later_hours_of_the_period_and_gives_credit_back(
    tmp_path, s3_client, instance: DagsterInstance, monkeypatch, clean_month
):
    assert clean_month == [("in", D(21)), ("out", D(330))]
    monkeypatch.delenv("TOKENBILL_SENSOR_LOOKBACK_HOURS", raising=False)
    bucket = "tb-late-rerate"
    s3_client.create_bucket(Bucket=bucket)
    data.upload(s3_client, bucket, ON_TIME)
    warehouse = str(tmp_path / "warehouse.duckdb")
    defs = build_defs(bucket, data.PREFIX, warehouse, str(_catalog_dir(tmp_path)))
    hourly = defs.resolve_job_def("hourly_usage_job")
    assert run_job_range(defs, "catalog_job", None, None, instance).success
    assert run_job_range(defs, "hourly_usage_job", FIRST, LAST, instance).success
    ledger_resources = {"warehouse": Warehouse(path=warehouse)}
    assert materialize([wallet_ledger], partition_key="2026-10-01", resources=ledger_resources)
    # Before the late event: 312 + 208 drawn.
    assert _rated(
        warehouse,
        f"select wallet_balance_after from billing.wallet_ledger order by {LEDGER_ORDER_DESC}",
    )[0] == (D(480),)

    # The late object lands; late_data_sensor re-runs its hour (a real run of its request).
    data.upload(s3_client, bucket, LATE)
    monkeypatch.setattr(ops_sensors, "utc_now", lambda: datetime(2026, 10, 2, 12, tzinfo=UTC))
    late = defs.resolve_sensor_def("late_data_sensor").evaluate_tick(
        _sensor_context(defs, instance)
    )
    (request,) = late.run_requests
    assert request.partition_key == LATE_HOUR
    assert hourly.execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags
    ).success
    # The late hour is right, the later hour is stale: the bug this fixes.
    assert _rated(warehouse, MONTH_BY_PRICE) == [("in", D(22)), ("out", D(550))]

    # rerate_sensor asks for one rating-only run over the later hours of the period.
    rerate = defs.resolve_sensor_def("rerate_sensor")
    result = rerate.evaluate_tick(_sensor_context(defs, instance))
    (request,) = result.run_requests
    assert request.run_key == rerate_run_key(LATE_HOUR, late.run_requests[0].tags[FINGERPRINT_TAG])
    assert list(request.asset_selection) == RERATE_ASSETS
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (
        "2026-10-01-04:00",
        "2026-10-02-05:00",
    )
    assert request.tags[TRIGGER_TAG] == "rerate"
    rerun = hourly.execute_in_process(
        instance=instance, tags=request.tags, asset_selection=request.asset_selection
    )
    assert rerun.success
    assert {e.asset_key for e in rerun.get_asset_materialization_events()} == set(RERATE_ASSETS)
    # Asked once: the next evaluation sees nothing new.
    again = rerate.evaluate_tick(_sensor_context(defs, instance, result.cursor))
    assert again.run_requests == [] and again.skip_message.startswith("no late-data re-run")

    # The month now equals the clean build, hour by hour where it matters.
    assert _rated(warehouse, MONTH_BY_PRICE) == clean_month
    assert _rated(
        warehouse,
        "select strftime(usage_hour, '%d %H'), price_id, amount from "
        "marts.fct_rated_charges_hourly where amount <> 0 order by 1, 2",
    ) == [
        ("01 01", "in", D(12)), ("01 01", "out", D(300)),
        ("01 03", "in", D(2)), ("01 03", "out", D(50)),
        ("02 05", "in", D(7)), ("02 05", "out", D(-20)),
    ]  # fmt: skip

    # The rollup follows the re-rating run too (days Oct 1 to Oct 2).
    rollup = defs.resolve_sensor_def("rollup_sensor").evaluate_tick(_sensor_context(defs, instance))
    assert {
        (r.run_key, r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in rollup.run_requests
    } >= {(rollup_run_key(rerun.run_id), "2026-10-01", "2026-10-02")}

    # Re-booking October: the corrected hour gives 13 of credit back; 1000 - 351 = 649.
    assert materialize([wallet_ledger], partition_key="2026-10-01", resources=ledger_resources)
    assert _rated(
        warehouse,
        "select entry_type, entry_ts, amount, wallet_balance_after from billing.wallet_ledger "
        f"order by {LEDGER_ORDER}",
    ) == [
        ("grant", datetime(2026, 10, 1), D(1000), D(1000)),
        ("deduction", datetime(2026, 10, 1, 1), D(-312), D(688)),
        ("deduction", datetime(2026, 10, 1, 3), D(-52), D(636)),
        ("reversal", datetime(2026, 10, 2, 5), D(13), D(649)),
    ]
    assert json.loads(result.cursor)["seen"]
