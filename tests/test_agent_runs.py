"""Agent runs, requests and retry waste on hand-made traces: exact numbers, incremental runs.

One warehouse per module: a catalog written here (two plans, one billing failed attempts),
events inserted into ``raw.usage_events`` in two landings (a late attempt of a run arrives
the next day), real ``dbt build``s of the hourly, daily and monthly models. Every expected
number is computed by hand in the comments.

Card: model m costs 0.0005 per input and 0.001 per output token; model mx is not on the card.
Prices: uncached input 0.001, output 0.002 per token, for m and mx.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import duckdb
import polars as pl
import pytest
import yaml
from dagster import TimeWindow

from orchestration.defs.ingestion.landing import ensure_raw_schema
from orchestration.defs.operations.sensors import RERATE_ASSETS
from orchestration.defs.rating.catalog import (
    catalog_tables,
    load_catalog,
    read_provider_costs,
    write_catalog,
)
from orchestration.defs.wallets.catalog import wallet_tables
from tests.dbt_support import dbt_build, query

D = Decimal
CARD = (
    "provider,model,effective_from,effective_to,input_per_token,output_per_token,"
    "cache_read_per_token,cache_write_per_token,reasoning_per_token,input_above_200k_per_token,"
    "output_above_200k_per_token,cache_read_above_200k_per_token,"
    "cache_write_above_200k_per_token,source\n"
    "p,m,2026-01-01,,0.0005,0.001,,,,,,,,test\n"
    "p,mpk,2026-01-01,,0.0005,0.001,,,,,,,,test\n"
)


def _prices(plan: str) -> list[dict]:
    return [
        {
            "price_id": f"{plan}-{meter}",
            "meter": meter,
            "selector": {"model": "m*"},
            "versions": [{"effective_from": "2026-01-01", "unit_price": price}],
        }
        for meter, price in (("uncached_input", "0.001"), ("output", "0.002"))
    ]


# Plan billall also bills model mpk's requests in started blocks of 2 (1.00 a block): a
# package is not linear in the quantity, so an hour's row is not a multiple of its attempts.
REQUEST_BLOCKS = {
    "price_id": "billall-request-blocks",
    "meter": "requests",
    "selector": {"model": "mpk"},
    "pricing": "package",
    "package_size": 2,
    "package_rounding": "up",
    "versions": [{"effective_from": "2026-01-01", "package_price": "1.00"}],
}

CATALOG = {
    "customers.yml": {
        "customers": [{"customer_id": c, "name": c, "currency": "USD"} for c in ("cus_a", "cus_b")]
    },
    "plans.yml": {
        "plans": [
            {
                "plan_id": "pro",
                "name": "pro",
                "currency": "USD",
                "bill_failed_attempts": False,
                "prices": _prices("pro"),
            },
            {
                "plan_id": "billall",
                "name": "billall",
                "currency": "USD",
                "bill_failed_attempts": True,
                "prices": [*_prices("billall"), REQUEST_BLOCKS],
            },
        ]
    },
    "subscriptions.yml": {
        "subscriptions": [
            {
                "subscription_id": "sub_a",
                "customer_id": "cus_a",
                "plan_id": "pro",
                "start": "2026-01-01",
            },
            {
                "subscription_id": "sub_b",
                "customer_id": "cus_b",
                "plan_id": "billall",
                "start": "2026-01-01",
            },
        ]  # fmt: skip
    },
    "overrides.yml": {"overrides": []},
}

# (event id, customer, time, trace, request group, attempt, status, model, input, output)
FIRST_LANDING = [
    # Run t1 of cus_a: call r1 retried once, call r2 succeeds at once.
    ("a1", "cus_a", "05 10:05", "t1", "r1", 1, "retried", "m", 100, 10),
    ("a2", "cus_a", "05 10:06", "t1", "r1", 2, "success", "m", 100, 20),
    ("a3", "cus_a", "05 11:10", "t1", "r2", 1, "success", "m", 200, 40),
    # An attempt without trace or request group: its own run and request.
    ("s1", "cus_a", "05 10:30", None, None, 1, "success", "m", 10, 1),
    # Run t2 of cus_b (plan bills failed attempts; model mx has no provider cost).
    ("b1", "cus_b", "05 12:00", "t2", "r4", 1, "failed", "mx", 100, 0),
    ("b2", "cus_b", "05 12:01", "t2", "r4", 2, "success", "mx", 100, 10),
]
# A late attempt of run t1, the next day: call r3 fails.
LATE_LANDING = [("a4", "cus_a", "06 01:00", "t1", "r3", 1, "failed", "m", 50, 0)]


# November, plan billall, model mpk: three calls in hour 02 10, one in hour 02 11; then a
# late fourth call in hour 02 10 (its object arrives after both hours were rated).
PACKAGE_LANDING = [
    ("p1", "cus_b", "02 10:01", "t5", "r5", 1, "success", "mpk", 10, 5),
    ("p2", "cus_b", "02 10:02", "t5", "r6", 1, "success", "mpk", 10, 5),
    ("p3", "cus_b", "02 10:03", "t5", "r7", 1, "success", "mpk", 10, 5),
    ("p4", "cus_b", "02 11:04", "t5", "r8", 1, "success", "mpk", 10, 5),
]
PACKAGE_LATE = [("p5", "cus_b", "02 10:05", "t5", "r9", 1, "success", "mpk", 10, 5)]


def _frame(rows, first_line: int, month: int = 10) -> pl.DataFrame:
    records = []
    for i, (eid, customer, when, trace, group, attempt, status, model, inp, out) in enumerate(rows):
        day, clock = when.split()
        hour, minute = (int(x) for x in clock.split(":"))
        ts = datetime(2026, month, int(day), hour, minute)
        records.append(
            {
                "partition_hour": ts.replace(minute=0),
                "source_key": "k",
                "line_number": first_line + i,
                "event_id": eid,
                "event_ts": ts,
                "customer_id": customer,
                "provider": "p",
                "model": model,
                "feature": "agent",
                "environment": "production",
                "status": status,
                "attempt": attempt,
                "trace_id": trace,
                "request_group_id": group,
                "input_tokens": inp,
                "output_tokens": out,
            }
        )
    return pl.DataFrame(records)


def _land(warehouse: str, rows, first_line: int, month: int = 10) -> None:
    with duckdb.connect(warehouse) as con:
        con.register("events", _frame(rows, first_line, month).to_arrow())
        con.execute("insert into raw.usage_events by name select * from events")


def _window(start: datetime, end: datetime) -> TimeWindow:
    return TimeWindow(start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))


def _build(root, warehouse, window, *select) -> None:
    result = dbt_build(warehouse, root / "target", window, *select)
    assert result.returncode == 0, result.stdout[-3000:]


OCT5, OCT6, OCT7 = (datetime(2026, 10, d) for d in (5, 6, 7))
RUN_MARTS = ("fct_agent_run_costs", "fct_request_costs")
NOV2_10, NOV2_11, NOV2_12 = (datetime(2026, 11, 2, h) for h in (10, 11, 12))
#: What rerate_sensor rebuilds for the later hours, as dbt models.
RERATE_MODELS = tuple(key.path[-1] for key in RERATE_ASSETS)


def attempt_costs(warehouse: str, where: str = "true") -> list[tuple]:
    return query(
        warehouse,
        "select event_id, strftime(usage_hour, '%d %H'), customer_id, run_id, request_id, "
        "total_tokens, currency, provider_cost, billed_amount, has_unpriced_usage "
        f"from marts.int_agent_runs__attempt_costs where {where} order by all",
    )


def runs(warehouse: str) -> list[tuple]:
    return query(
        warehouse,
        "select customer_id, run_id, attempts, model_calls, model_calls_by_model, retries, "
        "failed_attempts, retried_attempts, cancelled_attempts, input_tokens, output_tokens, "
        "total_tokens, provider_cost, billed_amount, margin, has_provider_cost, "
        "strftime(first_event_at, '%d %H:%M'), strftime(last_event_at, '%d %H:%M') "
        "from marts.fct_agent_run_costs order by all",
    )


def shortfalls(warehouse: str) -> dict[tuple, tuple]:
    """Per hour and rated grain (every meter of it): the rated amount less the attempts'
    billed shares and the rated provider cost less theirs, asserted to lie within 0 and 1e-18
    per attempt-meter share (each is truncated to 18 decimals)."""
    rows = query(
        warehouse,
        """
        with
        rated as (
            select usage_hour, customer_id, provider, model, feature, environment, status,
                sum(amount) as amount, sum(provider_cost) as provider_cost,
                count(*) as meter_rows
            from marts.fct_rated_charges_hourly
            group by all
        ),
        shares as (
            select usage_hour, customer_id, provider, model, feature, environment, status,
                sum(billed_amount) as billed_amount, sum(provider_cost) as provider_cost,
                count(*) as attempts
            from marts.int_agent_runs__attempt_costs
            group by all
        )
        -- a full join: a rated grain without attempts (or the reverse) has a null count
        select strftime(usage_hour, '%m-%d %H'), customer_id, model, status,
            rated.amount - shares.billed_amount, rated.provider_cost - shares.provider_cost,
            shares.attempts * rated.meter_rows
        from rated
        full join shares
            using (usage_hour, customer_id, provider, model, feature, environment, status)
        order by all
        """,
    )
    tiny = D("1e-18")
    assert all(shares is not None for *_, shares in rows)
    assert all(
        D(0) <= billed <= shares * tiny and (cost is None or D(0) <= cost <= shares * tiny)
        for *_, billed, cost, shares in rows
    )
    return {(hour, customer, model, status): (billed, cost)
            for hour, customer, model, status, billed, cost, _ in rows}  # fmt: skip


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("agent_runs")
    catalog_dir = root / "catalog"
    catalog_dir.mkdir()
    for name, doc in CATALOG.items():
        (catalog_dir / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    (catalog_dir / "provider_costs.csv").write_text(CARD)
    path = str(root / "warehouse.duckdb")
    with duckdb.connect(path) as con:
        ensure_raw_schema(con)
        write_catalog(
            con,
            catalog_tables(
                load_catalog(catalog_dir), read_provider_costs(catalog_dir / "provider_costs.csv")
            ),
        )
        write_catalog(con, wallet_tables([]))
    _land(path, FIRST_LANDING, 1)
    _build(root, path, None, "tag:catalog")
    _build(root, path, _window(OCT5, OCT6), "tag:hourly")
    _build(root, path, _window(OCT5, OCT6), *RUN_MARTS)
    first = runs(path)
    # The late attempt lands the next day; its hour and then its day are built.
    _land(path, LATE_LANDING, 100)
    _build(root, path, _window(OCT6, OCT7), "tag:hourly")
    _build(root, path, _window(OCT6, OCT7), *RUN_MARTS)
    second = runs(path)
    # Re-running the first day changes nothing.
    _build(root, path, _window(OCT5, OCT6), *RUN_MARTS)
    _build(root, path, _window(datetime(2026, 10, 1), datetime(2026, 11, 1)),
           "fct_retry_waste_monthly")  # fmt: skip
    october_costs = attempt_costs(path)
    # November: the package hours are built one by one, as the hourly schedule does.
    november = "usage_hour >= '2026-11-01'"
    _land(path, PACKAGE_LANDING, 200, month=11)
    _build(root, path, _window(NOV2_10, NOV2_11), "tag:hourly")
    _build(root, path, _window(NOV2_11, NOV2_12), "tag:hourly")
    package_first = attempt_costs(path, november)
    shortfalls_first = shortfalls(path)
    # The late call lands in hour 10, whose re-run rates it; hour 11 is now stale until
    # rerate_sensor's run rebuilds what it selects for it.
    _land(path, PACKAGE_LATE, 300, month=11)
    _build(root, path, _window(NOV2_10, NOV2_11), "tag:hourly")
    package_stale = attempt_costs(path, november)
    _build(root, path, _window(NOV2_11, NOV2_12), *RERATE_MODELS)
    package_rerated = attempt_costs(path, november)
    # Re-running both hours (and October's) changes nothing.
    _build(root, path, _window(NOV2_10, NOV2_12), "tag:hourly")
    _build(root, path, _window(OCT5, OCT7), "int_agent_runs__attempt_costs")
    return {
        "path": path,
        "first": first,
        "second": second,
        "root": root,
        "october_costs": october_costs,
        "package_first": package_first,
        "shortfalls_first": shortfalls_first,
        "package_stale": package_stale,
        "package_rerated": package_rerated,
    }


# Hour 05 10 of cus_a: a1 (retried, not billed: plan pro), a2 and s1 (success). Success rows:
# uncached input 110 -> billed 0.110, cost 0.055; output 21 -> billed 0.042, cost 0.021.
# a2's shares (100/110 and 20/21) are exact: billed 0.1 + 0.04, cost 0.05 + 0.02.
# a1: billed 0, cost 0.05 + 0.01. a3: billed 0.2 + 0.08 = 0.28, cost 0.1 + 0.04 = 0.14.
# a4 (failed, next day): billed 0, cost 50 * 0.0005 = 0.025.
T1_COMPLETE = (
    "cus_a", "t1", 4, 3, {"m": 3}, 1, 1, 1, 0, 450, 70, 520,
    D("0.295"), D("0.42"), D("0.125"), True, "05 10:05", "06 01:00",
)  # fmt: skip
SOLO = (
    "cus_a", "event:s1", 1, 1, {"m": 1}, 0, 0, 0, 0, 10, 1, 11,
    D("0.006"), D("0.012"), D("0.006"), True, "05 10:30", "05 10:30",
)  # fmt: skip
# cus_b bills failed attempts: 200 uncached input -> 0.2, 10 output -> 0.02. mx has no card
# row: cost unknown (null, not 0), margin unknown.
T2 = (
    "cus_b", "t2", 2, 1, {"mx": 1}, 1, 1, 0, 0, 200, 10, 210,
    None, D("0.22"), None, False, "05 12:00", "05 12:01",
)  # fmt: skip


def test_a_run_aggregates_its_attempts_exactly(warehouse):
    assert warehouse["second"] == sorted([T1_COMPLETE, SOLO, T2])


def test_a_late_attempt_re_aggregates_its_run_and_a_rerun_changes_nothing(warehouse):
    # Before the late attempt landed, t1 had 3 attempts (no a4: 0.025 of cost less).
    before = dict(((r[0], r[1]), r) for r in warehouse["first"])[("cus_a", "t1")]
    assert before[2:4] == (3, 2) and before[12:15] == (D("0.27"), D("0.42"), D("0.15"))
    assert before[-1] == "05 11:10"
    # After it: one row per run, complete; re-running Oct 5 gives the same rows.
    assert warehouse["second"] == runs(warehouse["path"])


def test_request_costs_count_attempts_until_success_and_the_cost_of_failures(warehouse):
    rows = query(
        warehouse["path"],
        "select customer_id, request_id, run_id, attempts, succeeded, attempts_until_success, "
        "failed_attempts, final_status, total_tokens, failed_attempt_tokens, provider_cost, "
        "failed_attempt_provider_cost, billed_amount, failed_attempt_billed_amount "
        "from marts.fct_request_costs order by all",
    )
    assert rows == [
        ("cus_a", "event:s1", "event:s1", 1, True, 1, 0, "success", 11, 0,
         D("0.006"), D("0"), D("0.012"), D("0")),
        ("cus_a", "r1", "t1", 2, True, 2, 1, "success", 230, 110,
         D("0.13"), D("0.06"), D("0.14"), D("0")),
        ("cus_a", "r2", "t1", 1, True, 1, 0, "success", 240, 0,
         D("0.14"), D("0"), D("0.28"), D("0")),
        ("cus_a", "r3", "t1", 1, False, None, 1, "failed", 50, 50,
         D("0.025"), D("0.025"), D("0"), D("0")),
        # The failed attempt is billed (plan billall): 100 * 0.001; its cost is unknown.
        ("cus_b", "r4", "t2", 2, True, 2, 1, "success", 210, 100,
         None, None, D("0.22"), D("0.1")),
    ]  # fmt: skip


def test_retry_waste_shows_what_failed_attempts_cost_and_what_was_billed(warehouse):
    rows = query(
        warehouse["path"],
        "select customer_id, model, feature, attempts, failed_attempts, retried_attempts, "
        "cancelled_attempts, wasted_attempts, total_tokens, wasted_tokens, provider_cost, "
        "wasted_provider_cost, billed_amount, wasted_billed_amount, wasted_token_share, "
        "wasted_cost_share, wasted_billed_share from marts.fct_retry_waste_monthly "
        "order by all",
    )
    assert rows == [
        # wasted: a1 (110 tokens, cost 0.06) and a4 (50, 0.025) of 531 tokens and 0.301.
        ("cus_a", "m", "agent", 5, 1, 1, 0, 2, 531, 160, D("0.301"), D("0.085"),
         D("0.432"), D("0"), D("0.301318"), D("0.282392"), D("0")),
        # b1 billed 0.1 of 0.22.
        ("cus_b", "mx", "agent", 2, 1, 0, 0, 1, 210, 100, None, None,
         D("0.22"), D("0.1"), D("0.476190"), None, D("0.454545")),
    ]  # fmt: skip


# The attempts' costs behind the marts above, one row per attempt, each its share of its rated
# rows: a1 (retried, plan pro bills it 0), a2 and s1 as in the comment above T1_COMPLETE; a4
# the next day; b1 and b2 have no provider cost (mx is not on the card).
OCTOBER_COSTS = [
    ("a1", "05 10", "cus_a", "t1", "r1", 110, "USD", D("0.06"), D("0"), False),
    ("a2", "05 10", "cus_a", "t1", "r1", 120, "USD", D("0.07"), D("0.14"), False),
    ("a3", "05 11", "cus_a", "t1", "r2", 240, "USD", D("0.14"), D("0.28"), False),
    ("a4", "06 01", "cus_a", "t1", "r3", 50, "USD", D("0.025"), D("0"), False),
    ("b1", "05 12", "cus_b", "t2", "r4", 100, "USD", None, D("0.1"), False),
    ("b2", "05 12", "cus_b", "t2", "r4", 110, "USD", None, D("0.12"), False),
    ("s1", "05 10", "cus_a", "event:s1", "event:s1", 11, "USD", D("0.006"), D("0.012"), False),
]


def test_attempt_costs_are_each_attempts_share_of_its_rated_rows(warehouse):
    assert warehouse["october_costs"] == OCTOBER_COSTS


def _package(eid, hour, request, billed):
    # Each mpk call: 10 input + 5 output tokens, billed 0.01 + 0.01 plus its share of the
    # request blocks; cost 0.005 + 0.005 (requests cost nothing).
    return (eid, hour, "cus_b", "t5", request, 15, "USD", D("0.01"), D("0.02") + billed, False)


def test_a_package_hour_is_prorated_to_its_attempts_truncated_to_18_decimals(warehouse):
    # Hour 10: 3 requests = 2 started blocks = 2.00; each call's share 2.00 x 1/3 truncated.
    # Hour 11: the period's 4th request: ceil(4/2) - ceil(3/2) = 0 blocks more.
    third = D("0.666666666666666666")
    assert warehouse["package_first"] == [
        _package("p1", "02 10", "r5", third),
        _package("p2", "02 10", "r6", third),
        _package("p3", "02 10", "r7", third),
        _package("p4", "02 11", "r8", D("0")),
    ]


def test_a_late_attempt_is_costed_with_its_hour_and_re_rating_updates_the_later_hours(warehouse):
    # The late p5 makes hour 10 4 requests (2 blocks: 0.5 each, exact) ...
    hour_10 = [
        _package(eid, "02 10", request, D("0.5"))
        for eid, request in (("p1", "r5"), ("p2", "r6"), ("p3", "r7"), ("p5", "r9"))
    ]
    # ... and hour 11's request the period's 5th: ceil(5/2) - ceil(4/2) = 1 block, 1.00. Until
    # the re-rating rebuilds hour 11, its attempt keeps its old share.
    assert warehouse["package_stale"] == sorted([*hour_10, _package("p4", "02 11", "r8", D(0))])
    assert warehouse["package_rerated"] == sorted([*hour_10, _package("p4", "02 11", "r8", D(1))])


def test_re_running_hours_leaves_the_attempt_costs_identical(warehouse):
    assert attempt_costs(warehouse["path"], "usage_hour < '2026-11-01'") == OCTOBER_COSTS
    november = attempt_costs(warehouse["path"], "usage_hour >= '2026-11-01'")
    assert november == warehouse["package_rerated"]


def test_the_shares_of_each_rated_row_add_up_to_it_short_by_at_most_1e_18_each(warehouse):
    # Every rated grain has attempts (mx's cost is unknown: null on both sides). Only the
    # package's thirds were truncated: 2.00 - 3 x 0.666666666666666666 = 2e-18 short; the
    # late call made its hour's shares exact.
    october = {
        ("10-05 10", "cus_a", "m", "retried"): (D(0), D(0)),
        ("10-05 10", "cus_a", "m", "success"): (D(0), D(0)),
        ("10-05 11", "cus_a", "m", "success"): (D(0), D(0)),
        ("10-05 12", "cus_b", "mx", "failed"): (D(0), None),
        ("10-05 12", "cus_b", "mx", "success"): (D(0), None),
        ("10-06 01", "cus_a", "m", "failed"): (D(0), D(0)),
    }
    assert warehouse["shortfalls_first"] == {
        **october,
        ("11-02 10", "cus_b", "mpk", "success"): (D("2e-18"), D(0)),
        ("11-02 11", "cus_b", "mpk", "success"): (D(0), D(0)),
    }
    assert shortfalls(warehouse["path"]) == {
        **october,
        ("11-02 10", "cus_b", "mpk", "success"): (D(0), D(0)),
        ("11-02 11", "cus_b", "mpk", "success"): (D(0), D(0)),
    }
