"""Credit runway, usage spikes, stable alert ids and the alerts feed, exactly.

One warehouse per module: a catalog written here, hand-made usage events (cus_s: 1,000,000
output tokens at 12:00 every day of Oct 1-7, then 6,000,000 on Oct 8) and a hand-made wallet
ledger for cus_w (inserted into billing.wallet_ledger as the ledger asset writes it), then a
real ``dbt build`` with the default spike settings (factor 5 a day, 20 an hour, over 7 days;
at least 1,000,000 tokens or 10 in currency). The alerts feed is exported to a real (moto) S3
by the real asset, three times.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import duckdb
import polars as pl
import pytest
import yaml
from dagster import TimeWindow, materialize

from contracts.wallets import Wallet
from orchestration.defs.alerts.assets import alerts_feed
from orchestration.defs.ingestion.landing import ensure_raw_schema
from orchestration.defs.rating.catalog import (
    catalog_tables,
    load_catalog,
    read_provider_costs,
    write_catalog,
)
from orchestration.defs.resources import S3UsageBucket, Warehouse
from orchestration.defs.wallets.catalog import wallet_tables
from orchestration.defs.wallets.ledger_asset import LEDGER_DDL
from tests.dbt_support import dbt_build, query

D = Decimal
CARD = (
    "provider,model,effective_from,effective_to,input_per_token,output_per_token,"
    "cache_read_per_token,cache_write_per_token,reasoning_per_token,input_above_200k_per_token,"
    "output_above_200k_per_token,cache_read_above_200k_per_token,"
    "cache_write_above_200k_per_token,source\n"
    "p,m,2026-01-01,,0.0005,0.0005,,,,,,,,test\n"
)
CATALOG = {
    "customers.yml": {
        "customers": [{"customer_id": c, "name": c, "currency": "USD"} for c in ("cus_s", "cus_w")]
    },
    "plans.yml": {
        "plans": [
            {
                "plan_id": "pro",
                "name": "pro",
                "currency": "USD",
                "prices": [
                    {
                        "price_id": "pro-output",
                        "meter": "output",
                        "selector": {"model": "m"},
                        "versions": [{"effective_from": "2026-01-01", "unit_price": "0.001"}],
                    }
                ],
            }
        ]
    },
    "subscriptions.yml": {
        "subscriptions": [
            {
                "subscription_id": f"sub_{c}",
                "customer_id": c,
                "plan_id": "pro",
                "start": "2026-01-01",
            }
            for c in ("cus_s", "cus_w")
        ]  # fmt: skip
    },
    "overrides.yml": {"overrides": []},
}
WALLET = Wallet.model_validate(
    {"wallet_id": "w1", "customer_id": "cus_w", "currency": "USD", "low_runway_days": 3}
)
# cus_w's ledger: 100 granted Oct 1, deductions of 10, 10, 30, 20 on Oct 1-4, a top-up of
# 100 on Oct 5 and a deduction of 120 on Oct 6.
LEDGER = [
    ("grant", "2026-10-01 00:00", "100", "100"),
    ("deduction", "2026-10-01 12:00", "-10", "90"),
    ("deduction", "2026-10-02 12:00", "-10", "80"),
    ("deduction", "2026-10-03 12:00", "-30", "50"),
    ("deduction", "2026-10-04 12:00", "-20", "30"),
    ("top_up", "2026-10-05 00:00", "100", "130"),
    ("deduction", "2026-10-06 12:00", "-120", "10"),
]


def _events() -> pl.DataFrame:
    rows = []
    for day in range(1, 9):
        ts = datetime(2026, 10, day, 12, 30)
        rows.append(
            {
                "partition_hour": ts.replace(minute=0),
                "source_key": "k",
                "line_number": day,
                "event_id": f"e{day}",
                "event_ts": ts,
                "customer_id": "cus_s",
                "provider": "p",
                "model": "m",
                "status": "success",
                "attempt": 1,
                "input_tokens": 0,
                "output_tokens": 6_000_000 if day == 8 else 1_000_000,
            }
        )
    return pl.DataFrame(rows)


def _ledger_rows() -> list[tuple]:
    return [
        (f"x{i}", "w1", "cus_w", "USD", "g1", "purchased", kind, ts, 0,
         ts if kind == "deduction" else None, "2026-10-01", D(amount), D(after), D(after))
        for i, (kind, ts, amount, after) in enumerate(LEDGER)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("alerts")
    catalog_dir = root / "catalog"
    catalog_dir.mkdir()
    for name, doc in CATALOG.items():
        (catalog_dir / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    (catalog_dir / "provider_costs.csv").write_text(CARD)
    path = str(root / "warehouse.duckdb")
    with duckdb.connect(path) as con:
        ensure_raw_schema(con)
        con.register("events", _events().to_arrow())
        con.execute("insert into raw.usage_events by name select * from events")
        write_catalog(
            con,
            catalog_tables(
                load_catalog(catalog_dir), read_provider_costs(catalog_dir / "provider_costs.csv")
            ),
        )
        write_catalog(con, wallet_tables([WALLET]))
        con.execute(LEDGER_DDL)
        con.executemany(
            "insert into billing.wallet_ledger values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _ledger_rows(),
        )
    october = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    for select in (
        ["tag:catalog", "tag:hourly"],
        ["fct_wallet_ledger", "fct_wallet_balances", "fct_wallet_runway", "fct_usage_spikes",
         "fct_billing_alerts"],
    ):  # fmt: skip
        result = dbt_build(path, root / "target", october, *select)
        assert result.returncode == 0, result.stdout[-3000:]
    return path


def test_runway_is_whole_days_at_the_trailing_burn_rate(warehouse):
    rows = query(
        warehouse,
        "select strftime(balance_date, '%d'), balance_at_day_end, burn_days, burned, "
        "daily_burn_rate, runway_days, strftime(covered_through, '%d'), is_low_runway "
        "from marts.fct_wallet_runway order by balance_date",
    )
    assert rows == [
        # floor(90 x 1 / 10) = 9
        ("01", D("90"), 1, D("10"), D("10"), 9, "10", False),
        # floor(80 x 2 / 20) = 8
        ("02", D("80"), 2, D("20"), D("10"), 8, "10", False),
        # floor(50 x 3 / 50) = 3: not below 3
        ("03", D("50"), 3, D("50"), D("16.666666666666666666"), 3, "06", False),
        # floor(30 x 4 / 70) = 1 < 3
        ("04", D("30"), 4, D("70"), D("17.5"), 1, "05", True),
        # the top-up: floor(130 x 5 / 70) = 9
        ("05", D("130"), 5, D("70"), D("14"), 9, "14", False),
        # floor(10 x 6 / 190) = 0
        ("06", D("10"), 6, D("190"), D("31.666666666666666666"), 0, "06", True),
    ]


def test_spikes_show_the_baseline_beside_the_value(warehouse):
    rows = query(
        warehouse,
        "select grain, metric, strftime(period_start, '%d %H'), customer_id, model, value, "
        "baseline, baseline_periods, factor from marts.fct_usage_spikes order by all",
    )
    # Oct 8: 6,000,000 tokens (6,000 billed at 0.001) against a 7-day average of 1,000,000
    # (1,000): > 5 x. Its 12:00 hour against the 168 hours before it (7,000,000 tokens:
    # 41,666.67 an hour): > 20 x. Oct 1-7 are not judged (no full week of history before).
    day_tokens, day_amount = D("1000000"), D("1000")
    hour_tokens, hour_amount = D("41666.666666666666666666"), D("41.666666666666666666")
    assert rows == [
        ("day", "amount", "08 00", "cus_s", "m", D("6000"), day_amount, 7, D("5")),
        ("day", "amount", "08 00", "cus_s", None, D("6000"), day_amount, 7, D("5")),
        ("day", "tokens", "08 00", "cus_s", "m", D("6000000"), day_tokens, 7, D("5")),
        ("day", "tokens", "08 00", "cus_s", None, D("6000000"), day_tokens, 7, D("5")),
        ("hour", "amount", "08 12", "cus_s", "m", D("6000"), hour_amount, 168, D("20")),
        ("hour", "amount", "08 12", "cus_s", None, D("6000"), hour_amount, 168, D("20")),
        ("hour", "tokens", "08 12", "cus_s", "m", D("6000000"), hour_tokens, 168, D("20")),
        ("hour", "tokens", "08 12", "cus_s", None, D("6000000"), hour_tokens, 168, D("20")),
    ]


def test_alerts_have_stable_ids(warehouse):
    rows = query(
        warehouse,
        "select alert_id, alert_type, customer_id, wallet_id, model, strftime(alert_hour, "
        "'%d %H'), threshold, value_after, baseline from marts.fct_billing_alerts "
        "where alert_type = 'low_runway' or (alert_type = 'usage_spike' and alert_id like "
        "'%|day|tokens|%') order by alert_id",
    )
    assert rows == [
        ("low_runway|w1|2026-10-04|3", "low_runway", "cus_w", "w1", None, "04 23",
         D("3"), D("1"), D("17.5")),
        ("low_runway|w1|2026-10-06|3", "low_runway", "cus_w", "w1", None, "06 23",
         D("3"), D("0"), D("31.666666666666666666")),
        ("usage_spike|day|tokens|cus_s|*|2026-10-08T00|5", "usage_spike",
         "cus_s", None, None, "08 00", D("5"), D("6000000"), D("1000000")),
        ("usage_spike|day|tokens|cus_s|m|2026-10-08T00|5", "usage_spike",
         "cus_s", None, "m", "08 00", D("5"), D("6000000"), D("1000000")),
    ]  # fmt: skip


def _feed(s3_client, bucket: str) -> list[dict]:
    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix="exports/alerts/")
    lines = []
    for obj in listing.get("Contents", []):
        body = s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
        lines += [json.loads(line) for line in body.splitlines()]
    return lines


def test_every_alert_is_exported_once_across_reruns(warehouse, bucket, s3_client):
    resources = {
        "warehouse": Warehouse(path=warehouse),
        "s3": S3UsageBucket(bucket=bucket, prefix="usage"),
    }
    total = query(warehouse, "select count(*) from marts.fct_billing_alerts")[0][0]
    first = materialize([alerts_feed], resources=resources)
    assert first.success
    exported = _feed(s3_client, bucket)
    assert len(exported) == total == len({a["alert_id"] for a in exported})
    runway = next(a for a in exported if a["alert_id"] == "low_runway|w1|2026-10-04|3")
    assert runway["value_after"] == "1" and runway["baseline"] == "17.5"
    assert runway["alerted_at"] == "2026-10-05T00:00:00Z"
    # A rerun exports nothing new and writes no object.
    assert materialize([alerts_feed], resources=resources).success
    assert _feed(s3_client, bucket) == exported
    # A new alert (the wallet falls below its runway again on Oct 8) is exported alone.
    with duckdb.connect(warehouse) as con:
        con.execute(
            "insert into billing.wallet_ledger values ('x7', 'w1', 'cus_w', 'USD', 'g1', "
            "'purchased', 'top_up', '2026-10-07 00:00', 0, null, '2026-10-01', 500, 510, 510), "
            "('x8', 'w1', 'cus_w', 'USD', 'g1', 'purchased', 'deduction', '2026-10-08 12:00', 0, "
            "'2026-10-08 12:00', '2026-10-01', -505, 5, 5)"
        )
    assert materialize([alerts_feed], resources=resources).success
    again = _feed(s3_client, bucket)
    new = [a for a in again if a not in exported]
    assert [a["alert_id"] for a in new] == ["low_runway|w1|2026-10-08|3"]
    assert len(again) == len({a["alert_id"] for a in again}) == total + 1
    recorded = query(
        warehouse, "select count(*), count(distinct alert_id) from billing.exported_alerts"
    )
    assert recorded == [(total + 1, total + 1)]
