"""Rating end to end: one real run of the catalog load and the dbt models on hand-made events.

The rules of the SQL alone (tiers, packages, allowances, versions, the choice among prices,
fee proration and minimum true-ups, invoice rounding) are dbt unit tests beside the models
(``_rating__unit_tests.yml``, ``_invoicing__unit_tests.yml``, run by tests/test_dbt_unit.py).
Here, one small warehouse is built once for the module: hand-made events (one customer per
scenario) and a catalog written here, then a real ``dbt build`` of the catalog, hourly and
invoicing models, for what crosses the Python catalog load and several models: precedence
from the specificity the load computes, unpriced usage, currencies, provider cost, fees and
minimums on invoices, invoice text. Each test reads its scenario's rows; every expected amount
is computed by hand in the test.
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
from orchestration.defs.rating.catalog import (
    catalog_tables,
    load_catalog,
    read_provider_costs,
    write_catalog,
)
from orchestration.defs.wallets.catalog import wallet_tables
from orchestration.defs.wallets.ledger_table import LEDGER_DDL
from tests.dbt_support import dbt_build, query, raw_events

D = Decimal
CARD = (
    "provider,model,effective_from,effective_to,input_per_token,output_per_token,"
    "cache_read_per_token,cache_write_per_token,reasoning_per_token,input_above_200k_per_token,"
    "output_above_200k_per_token,cache_read_above_200k_per_token,"
    "cache_write_above_200k_per_token,source\n"
    "p,m,2026-01-01,,0.001,0.01,,,,,0.02,,,test\n"
)
TIERS = [
    {"up_to": 10, "unit_price": "50"},
    {"up_to": 20, "unit_price": "40"},
    {"up_to": None, "unit_price": "30"},
]


def output_price(price_id: str, **spec) -> dict:
    spec.setdefault("selector", {"model": "m"})
    spec.setdefault("versions", [{"effective_from": "2026-01-01", "unit_price": "1"}])
    return {"price_id": price_id, "meter": "output", **spec}


PLANS = [
    {
        "plan_id": "longctx",
        "prices": [
            output_price("longctx-out"),
            {
                "price_id": "longctx-in",
                "meter": "uncached_input",
                "selector": {"model": "m"},
                "versions": [{"effective_from": "2026-01-01", "unit_price": "0"}],
            },
        ],
    },
    {
        "plan_id": "grad",
        "prices": [
            output_price(
                "grad",
                pricing="graduated",
                versions=[{"effective_from": "2026-01-01", "tiers": TIERS}],
            )
        ],
    },
    {
        "plan_id": "pkgup",
        "prices": [
            output_price(
                "pkgup",
                pricing="package",
                package_size=100,
                package_rounding="up",
                versions=[{"effective_from": "2026-01-01", "package_price": "1.00"}],
            )
        ],
    },
    {
        "plan_id": "allow",
        "platform_fee": "31.00",
        "minimum_spend": "100",
        "prices": [
            output_price(
                "allow",
                included=100,
                versions=[{"effective_from": "2026-01-01", "unit_price": "0.5"}],
            )
        ],
    },
    {
        "plan_id": "vers",
        "prices": [
            output_price(
                "vers",
                versions=[
                    {"effective_from": "2026-01-01", "unit_price": "1"},
                    {"effective_from": "2026-10-05T08:00:00", "unit_price": "2"},
                ],
            )
        ],
    },
    {
        "plan_id": "prec",
        "prices": [
            output_price("prec-pattern", selector={"model": "m*"}),
            output_price(
                "prec-exact",
                selector={"model": "m"},
                versions=[{"effective_from": "2026-01-01", "unit_price": "2"}],
            ),
            output_price(
                "prec-chat",
                selector={"model": "m", "feature": "chat"},
                versions=[{"effective_from": "2026-01-01", "unit_price": "3"}],
            ),
        ],
    },
    {
        "plan_id": "amb",
        "prices": [
            output_price("amb-a", selector={"model": "m*"}),
            output_price("amb-b", selector={"model": "*m"}),
        ],
    },
    {
        "plan_id": "jpy",
        "currency": "JPY",
        "prices": [
            output_price(
                "jpy", unit="1M", versions=[{"effective_from": "2026-01-01", "unit_price": "150"}]
            )
        ],
    },
    # Minimums on invoices: a USD minimum with sub-cent usage; a prorated JPY minimum.
    {
        "plan_id": "usdmin",
        "platform_fee": "2000.00",
        "minimum_spend": "25000.00",
        "prices": [
            output_price(
                f"usdmin-{f}",
                selector={"model": "m", "feature": f},
                versions=[{"effective_from": "2026-01-01", "unit_price": "1.005"}],
            )
            for f in ("a", "b", "c")
        ],
    },
    {
        "plan_id": "jpymin",
        "currency": "JPY",
        "minimum_spend": "10000",
        "prices": [
            output_price(
                f"jpymin-{f}",
                selector={"model": "m", "feature": f},
                versions=[{"effective_from": "2026-01-01", "unit_price": "0.5"}],
            )
            for f in ("a", "b", "c")
        ],
    },
]
# customer -> (plan, anchor day)
SUBSCRIBED = {
    "cus_grad": ("grad", 1), "cus_pkgup": ("pkgup", 1), "cus_allow": ("allow", 1),
    "cus_vers": ("vers", 1), "cus_spec": ("prec", 1), "cus_over": ("prec", 1),
    "cus_amb": ("amb", 1), "cus_jpy": ("jpy", 1), "cus_noprice": ("grad", 1),
    "cus_long": ("longctx", 1), "cus_usdmin": ("usdmin", 1),
}  # fmt: skip
OVERRIDES = [
    {
        "customer_id": "cus_over",
        "prices": [
            output_price(
                "over-cus",
                selector={"model": "m*"},
                versions=[{"effective_from": "2026-01-01", "unit_price": "0.25"}],
            )
        ],
    },
]
# (customer, "DD HH", output tokens, extra fields)
EVENTS = [
    ("cus_grad", "05 10", 15, {}), ("cus_grad", "05 11", 10, {}),
    ("cus_pkgup", "05 10", 101, {}),
    ("cus_allow", "05 10", 60, {}), ("cus_allow", "05 11", 60, {}), ("cus_allow", "05 12", 10, {}),
    ("cus_vers", "05 07", 10, {}), ("cus_vers", "05 08", 10, {}),
    ("cus_spec", "05 10", 10, {"feature": "chat"}), ("cus_spec", "05 10", 10, {"feature": "code"}),
    ("cus_over", "05 10", 10, {"feature": "chat"}),
    ("cus_amb", "05 10", 10, {}),
    ("cus_jpy", "05 10", 1_000_000, {}),
    ("cus_noprice", "05 10", 10, {"model": "other"}),
    ("cus_nosub", "05 10", 10, {}),
    # One hour, one grain: a 1k-token prompt and a 250k-token one (long-context rates).
    ("cus_long", "05 10", 10, {"input_tokens": 1_000}),
    ("cus_long", "05 10", 20, {"input_tokens": 250_000, "reasoning_tokens": 5}),
    *(("cus_usdmin", "05 10", 1, {"feature": f}) for f in ("a", "b", "c")),
    *(("cus_jpymin", "15 10", 1, {"feature": f}) for f in ("a", "b", "c")),
]  # fmt: skip


def _catalog_documents() -> dict[str, dict]:
    customers = [
        {"customer_id": c, "name": c, "currency": "JPY" if c.startswith("cus_jpy") else "USD"}
        for c in [*SUBSCRIBED, "cus_nosub", "cus_mid", "cus_jpymin"]
    ]
    plans = [
        {"plan_id": p["plan_id"], "name": p["plan_id"], "currency": p.get("currency", "USD"),
         **{k: p[k] for k in ("bill_failed_attempts", "platform_fee", "minimum_spend") if k in p},
         "prices": p["prices"]}
        for p in PLANS
    ]  # fmt: skip
    subscriptions = [
        {"subscription_id": f"sub_{c[4:]}", "customer_id": c, "plan_id": plan,
         "start": "2026-01-01", "billing_anchor_day": anchor}
        for c, (plan, anchor) in SUBSCRIBED.items()
    ] + [
        # Joins on Oct 11: 21 of October's 31 days.
        {"subscription_id": "sub_mid", "customer_id": "cus_mid", "plan_id": "allow",
         "start": "2026-10-11"},
        {"subscription_id": "sub_jpymin", "customer_id": "cus_jpymin", "plan_id": "jpymin",
         "start": "2026-10-11"},
    ]  # fmt: skip
    return {
        "customers.yml": {"customers": customers},
        "plans.yml": {"plans": plans},
        "subscriptions.yml": {"subscriptions": subscriptions},
        "overrides.yml": {"overrides": OVERRIDES},
    }


def _events_frame() -> pl.DataFrame:
    def at(when: str) -> datetime:
        day, hour = (int(x) for x in when.split())
        return datetime(2026, 10, day, hour, 30)

    return raw_events([(c, at(when), output, extra) for c, when, output, extra in EVENTS])


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    root = tmp_path_factory.mktemp("rating")
    catalog_dir = root / "catalog"
    catalog_dir.mkdir()
    for name, doc in _catalog_documents().items():
        (catalog_dir / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    (catalog_dir / "provider_costs.csv").write_text(CARD)
    warehouse = str(root / "warehouse.duckdb")
    with duckdb.connect(warehouse) as con:
        ensure_raw_schema(con)
        con.register("events", _events_frame().to_arrow())
        con.execute("insert into raw.usage_events by name select * from events")
        tables = catalog_tables(
            load_catalog(catalog_dir), read_provider_costs(catalog_dir / "provider_costs.csv")
        )
        write_catalog(con, tables)
        write_catalog(con, wallet_tables([]))  # no wallets (catalog_job loads both)
    window = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    result = dbt_build(warehouse, root / "target", window, "tag:catalog", "tag:hourly")
    fees = dbt_build(warehouse, root / "target", window, "fct_subscription_fees")
    assert fees.returncode == 0, fees.stdout[-3000:]
    with duckdb.connect(warehouse) as con:
        con.execute(LEDGER_DDL)  # no wallets in this catalog: an empty ledger
    invoices = dbt_build(
        warehouse,
        root / "target",
        window,
        "fct_wallet_ledger",
        "fct_wallet_credits",
        "models/invoicing",
        settings={"as_of": "2026-11-10T00:00:00", "invoice_grace_days": "3"},
    )
    # October has unpriced usage on purpose: the close as of Nov 10 is held (the invoices stay
    # drafts) and close_has_no_unpriced_usage is the one test that fails.
    held = [line for line in invoices.stdout.splitlines() if " FAIL " in line]
    assert len(held) == 1 and "close_has_no_unpriced_usage" in held[0], invoices.stdout[-3000:]
    assert "ERROR=1 SKIP=0" in invoices.stdout, invoices.stdout[-3000:]  # dbt counts it once
    # all_usage_is_priced fails on purpose (unpriced scenarios); nothing else may fail.
    failures = [
        line for line in result.stdout.splitlines()
        if ("FAIL" in line or "ERROR" in line) and "all_usage_is_priced" not in line
        and "Done." not in line and "Completed with" not in line
    ]  # fmt: skip
    assert not failures, result.stdout[-3000:]
    return warehouse


def amounts(warehouse: str, customer: str) -> list[tuple]:
    with duckdb.connect(warehouse, read_only=True) as con:
        return con.execute(
            "select strftime(usage_hour, '%d %H'), price_id, price_version, quantity, "
            "period_quantity_before, amount from marts.fct_rated_charges_hourly "
            "where customer_id = ? order by usage_hour, price_id, feature",
            [customer],
        ).fetchall()


def test_more_specific_selector_wins(rated):
    # feature chat -> exact model + feature (3/token); feature code -> exact model (2/token),
    # both beating the pattern m* (1/token).
    assert [(r[1], r[-1]) for r in amounts(rated, "cus_spec")] == [
        ("prec-chat", D(30)),
        ("prec-exact", D(20)),
    ]


def test_customer_override_beats_any_plan_price(rated):
    # The override is only a pattern, yet it beats the plan's exact model + feature price.
    assert [(r[1], r[-1]) for r in amounts(rated, "cus_over")] == [("over-cus", D("2.5"))]


def unpriced(warehouse: str, customer: str) -> list[tuple]:
    with duckdb.connect(warehouse, read_only=True) as con:
        return con.execute(
            "select meter, model, quantity, unpriced_reason, ambiguous_price_ids "
            "from marts.fct_unpriced_usage where customer_id = ?",
            [customer],
        ).fetchall()


def test_equally_specific_prices_are_ambiguous_and_never_priced(rated):
    assert amounts(rated, "cus_amb") == []
    assert unpriced(rated, "cus_amb") == [("output", "m", 10, "ambiguous_price", "amb-a,amb-b")]


def test_usage_without_price_or_subscription_is_unpriced_not_zero(rated):
    assert amounts(rated, "cus_noprice") == [] and amounts(rated, "cus_nosub") == []
    assert unpriced(rated, "cus_noprice") == [("output", "other", 10, "no_matching_price", None)]
    assert unpriced(rated, "cus_nosub") == [("output", "m", 10, "no_active_subscription", None)]


def test_jpy_plan_rates_in_yen(rated):
    with duckdb.connect(rated, read_only=True) as con:
        rows = con.execute(
            "select currency, quantity, amount from marts.fct_rated_charges_hourly "
            "where customer_id in ('cus_jpy', 'cus_grad') order by customer_id, usage_hour"
        ).fetchall()
    # 150 JPY per 1M tokens: exactly 150 for 1M; USD rows stay USD.
    assert rows == [
        ("USD", 15, D(700)),
        ("USD", 10, D(350)),
        ("JPY", 1_000_000, D(150)),
    ]


def test_provider_cost_uses_the_card_with_fallbacks(rated):
    # Card: output 0.01/token. 15 output tokens -> 0.15.
    with duckdb.connect(rated, read_only=True) as con:
        rows = con.execute(
            "select provider_cost, has_provider_cost from marts.fct_rated_charges_hourly "
            "where customer_id = 'cus_grad' order by usage_hour"
        ).fetchall()
    assert rows == [(D("0.15"), True), (D("0.10"), True)]


def test_provider_cost_prices_long_prompts_whole_at_long_context_rates(rated):
    # Card: input 0.001 (no long-context input rate: the plain one), output 0.01, output
    # above 200k 0.02, reasoning at the output rate. The 1k prompt: 1000 * 0.001 input and
    # 10 * 0.01 output; the 250k prompt: 250000 * 0.001 input, (20 - 5) * 0.02 output and
    # 5 * 0.01 reasoning. Both calls are one row of the hourly mart.
    rows = query(
        rated,
        "select meter, quantity, provider_cost from marts.fct_rated_charges_hourly "
        "where customer_id = 'cus_long' order by meter",
    )
    hourly = query(
        rated,
        "select event_count, long_context_uncached_input_tokens, long_context_output_tokens, "
        "long_context_reasoning_tokens from marts.fct_token_usage_hourly "
        "where customer_id = 'cus_long'",
    )
    assert hourly == [(2, 250_000, 20, 5)]
    assert rows == [("output", 30, D("0.45")), ("uncached_input", 251_000, D("251"))]


def invoice_of(warehouse: str, customer: str) -> tuple[list[tuple], tuple]:
    """(lines: line_key, amount_precise, amount, amount_minor_units), (invoice totals).

    The invoices of this data set stay drafts: it has unpriced usage on purpose, so its close
    is held (close_has_no_unpriced_usage); drafts are rounded exactly as finalized invoices."""
    with duckdb.connect(warehouse, read_only=True) as con:
        lines = con.execute(
            "select line_key, amount_precise, amount, amount_minor_units from "
            "marts.fct_invoice_line_items where customer_id = ? order by line_key",
            [customer],
        ).fetchall()
        invoice = con.execute(
            "select currency, subtotal, credits_applied, total_due, total_precise, status "
            "from marts.fct_invoices where customer_id = ?",
            [customer],
        ).fetchone()
    return lines, invoice


def test_usd_minimum_invoices_exactly_fee_plus_minimum(rated):
    # Fee 2000.00, minimum 25000.00, usage 3 x 1.005 = 3.015: the true-up is 24996.985 and the
    # exact total 27000 exactly. Per-line rounding made it 27000.02 (1.01 x 3 + 24996.99).
    # Largest remainder: floors 2000.00 + 24996.98 + 1.00 x 3 = 26999.98; the 2 missing cents
    # go to the 0.5-cent remainders in line-key order: minimum_true_up, then usdmin-a.
    lines, invoice = invoice_of(rated, "cus_usdmin")
    assert invoice == ("USD", D(27000), D(0), D(27000), D(27000), "draft")
    assert lines == [
        ("minimum_true_up", D("24996.985"), D("24996.99"), 2499699),
        ("platform_fee", D(2000), D(2000), 200000),
        ("usage:usdmin-a:output", D("1.005"), D("1.01"), 101),
        ("usage:usdmin-b:output", D("1.005"), D("1.00"), 100),
        ("usage:usdmin-c:output", D("1.005"), D("1.00"), 100),
    ]


def test_prorated_jpy_minimum_invoices_exactly_the_rounded_minimum(rated):
    # From Oct 11: 10000 yen x 21/31 = 6774.19... -> 6774 yen. Usage 3 x 0.5 = 1.5 yen, the
    # true-up 6772.5. Floors 6772 + 0 x 3; the 2 missing yen go to the 0.5 remainders in
    # line-key order: minimum_true_up, then jpymin-a.
    lines, invoice = invoice_of(rated, "cus_jpymin")
    assert invoice == ("JPY", D(6774), D(0), D(6774), D(6774), "draft")
    assert lines == [
        ("minimum_true_up", D("6772.5"), D(6773), 6773),
        ("usage:jpymin-a:output", D("0.5"), D(1), 1),
        ("usage:jpymin-b:output", D("0.5"), D(0), 0),
        ("usage:jpymin-c:output", D("0.5"), D(0), 0),
    ]


def test_prorated_fee_and_minimum_are_whole_cents_and_total_once(rated):
    # cus_mid joined on Oct 11: fee 21 and a minimum of 67.74 (rounded when prorated), all
    # trued up: 88.74.
    lines, invoice = invoice_of(rated, "cus_mid")
    assert lines == [
        ("minimum_true_up", D("67.74"), D("67.74"), 6774),
        ("platform_fee", D(21), D(21), 2100),
    ]
    assert invoice == ("USD", D("88.74"), D(0), D("88.74"), D("88.74"), "draft")


def test_usage_lines_read_like_an_invoice(rated):
    with duckdb.connect(rated, read_only=True) as con:
        rows = con.execute(
            "select customer_id, line_key, description, quantity, unit_price, unit "
            "from marts.fct_invoice_line_items "
            "where customer_id in ('cus_jpy', 'cus_grad', 'cus_pkgup', 'cus_allow', 'cus_vers') "
            "order by customer_id, line_key"
        ).fetchall()
    assert rows == [
        ("cus_allow", "minimum_true_up",
         "Minimum spend true-up (minimum $100.00, usage $15.00)", 1, None, None),
        ("cus_allow", "platform_fee", "Platform fee (allow)", 31 * 86_400, None, None),
        ("cus_allow", "usage:allow:output",
         "M output tokens, 130 tokens at $0.50 per token (first 100 free)", 130, None, "1"),
        ("cus_grad", "usage:grad:output",
         "M output tokens, 25 tokens, graduated tiers: 10 at $50.00 + 10 at $40.00 "
         "+ 5 at $30.00", 25, None, "1"),
        ("cus_jpy", "usage:jpy:output", "M output tokens, 1.0M tokens at ¥150 per 1M",
         1_000_000, D(150), "1M"),
        ("cus_pkgup", "usage:pkgup:output",
         "M output tokens, 101 tokens at $1.00 per started package of 100", 101, None, "1"),
        ("cus_vers", "usage:vers:output",
         "M output tokens, 20 tokens at the prices in force at each hour", 20, None, "1"),
    ]  # fmt: skip
