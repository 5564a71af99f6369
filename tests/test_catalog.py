"""The catalog contract: a broken catalog is rejected whole, with every problem listed."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster import materialize

from contracts.catalog import CatalogError, validate_catalog
from orchestration.defs.rating.assets import pricing_catalog
from orchestration.defs.rating.catalog import load_catalog, load_catalog_dir
from orchestration.defs.rating.resources import PricingCatalogDir
from orchestration.defs.resources import Warehouse
from tools.generator.demo_catalog import main as demo_catalog_main

REPO = Path(__file__).resolve().parent.parent
D = Decimal


#: The meters as a catalog error lists them.
METER_CHOICES = (
    "'uncached_input', 'cached_input', 'cache_write', 'output', 'reasoning', 'requests', "
    "'cache_write_5m', 'cache_write_1h', 'audio_input', 'image_input', 'audio_output' or "
    "'image_output'"
)


def price(price_id: str, **spec) -> dict:
    base = {
        "price_id": price_id,
        "meter": "output",
        "selector": {"model": "m"},
        "versions": [{"effective_from": "2026-01-01", "unit_price": "1"}],
    }
    base.update(spec)
    return base


def documents(plans=None, subscriptions=None, customers=None, overrides=None) -> dict:
    return {
        "customers.yml": {
            "customers": customers or [{"customer_id": "c1", "name": "C1", "currency": "USD"}]
        },
        "plans.yml": {
            "plans": plans
            or [{"plan_id": "p1", "name": "P1", "currency": "USD", "prices": [price("a")]}]
        },
        "subscriptions.yml": {
            "subscriptions": subscriptions
            or [
                {
                    "subscription_id": "s1",
                    "customer_id": "c1",
                    "plan_id": "p1",
                    "start": "2026-01-01",
                }
            ]
        },  # fmt: skip
        "overrides.yml": {"overrides": overrides or []},
    }


def problems_of(docs: dict) -> list[str]:
    with pytest.raises(CatalogError) as info:
        validate_catalog(docs)
    return [str(p) for p in info.value.problems]


def test_a_valid_catalog_loads():
    catalog = validate_catalog(documents())
    assert [p.plan_id for p in catalog.plans] == ["p1"]


def test_every_problem_is_listed_with_file_entry_field_and_expectation():
    docs = documents(
        plans=[{
            "plan_id": "p1", "name": "P1", "currency": "USD",
            "prices": [price("a", meter="tokens"), price("b", pricing="graduated")],
        }],
        subscriptions=[
            {"subscription_id": "s1", "customer_id": "nobody", "plan_id": "p1",
             "start": "2026-01-01"},
            {"subscription_id": "s2", "customer_id": "c1", "plan_id": "p9",
             "start": "2026-01-01", "colour": "blue"},
        ],
    )  # fmt: skip
    assert problems_of(docs) == [
        f"plans.yml: plans[0] (plan_id=p1): prices.0.meter: Input should be {METER_CHOICES} "
        f"(expected: {METER_CHOICES})",
        "plans.yml: plans[0] (plan_id=p1): prices.1: Value error, versions[0]: a graduated "
        "price needs tiers",
        "subscriptions.yml: subscriptions[1] (subscription_id=s2): colour: Extra inputs are not "
        "permitted (expected: only the documented fields (see README, 'The catalog'))",
        "subscriptions.yml: subscriptions[0] (subscription_id=s1): customer_id: unknown "
        "customer 'nobody' (expected: a customer_id from customers.yml)",
    ]


def test_identical_selectors_for_one_meter_are_ambiguous():
    docs = documents(plans=[{
        "plan_id": "p1", "name": "P1", "currency": "USD",
        "prices": [price("a"), price("b")],
    }])  # fmt: skip
    assert problems_of(docs) == [
        "plans.yml: plans[0] (plan_id=p1): prices (b).selector: ambiguous: same meter and "
        "selector as a (expected: one price per meter and selector (make one more specific, "
        "or version it))"
    ]


def test_plan_currency_must_match_the_customer():
    docs = documents(plans=[{"plan_id": "p1", "name": "P1", "currency": "EUR", "prices": []}])
    assert problems_of(docs) == [
        "subscriptions.yml: subscriptions[0] (subscription_id=s1): plan_id: plan p1 bills in EUR "
        "but customer c1 in USD (expected: a plan in the customer's currency)"
    ]


def test_tiers_must_increase_and_end_unbounded():
    tiers = [{"up_to": 20, "unit_price": "1"}, {"up_to": 10, "unit_price": "1"},
             {"up_to": None, "unit_price": "1"}]  # fmt: skip
    docs = documents(plans=[{
        "plan_id": "p1", "name": "P1", "currency": "USD",
        "prices": [price("a", pricing="volume",
                         versions=[{"effective_from": "2026-01-01", "tiers": tiers}])],
    }])  # fmt: skip
    assert problems_of(docs) == [
        "plans.yml: plans[0] (plan_id=p1): prices.0: Value error, versions[0]: tier up_to "
        "bounds must increase strictly from > 0"
    ]


def test_overlapping_versions_and_subscriptions_are_rejected():
    docs = documents(
        plans=[{"plan_id": "p1", "name": "P1", "currency": "USD", "prices": [price("a", versions=[
            {"effective_from": "2026-01-01", "effective_to": "2026-03-01", "unit_price": "1"},
            {"effective_from": "2026-02-01", "unit_price": "2"},
        ])]}],
        subscriptions=[
            {"subscription_id": "s1", "customer_id": "c1", "plan_id": "p1", "start": "2026-01-01"},
            {"subscription_id": "s2", "customer_id": "c1", "plan_id": "p1", "start": "2026-06-01"},
        ],
    )  # fmt: skip
    assert problems_of(docs) == [
        "plans.yml: plans[0] (plan_id=p1): prices (a).versions: version from 2026-02-01 "
        "overlaps the one ending 2026-03-01 (expected: versions that do not overlap)",
        "subscriptions.yml: subscriptions[1] (subscription_id=s2): start: overlaps s1 of the "
        "same customer (expected: one active subscription per customer at a time)",
    ]


def test_amounts_are_exact_decimals_even_when_written_as_yaml_floats():
    docs = documents(plans=[{
        "plan_id": "p1", "name": "P1", "currency": "USD", "platform_fee": 0.1,
        "prices": [price("a", versions=[{"effective_from": "2026-01-01", "unit_price": 0.3}])],
    }])  # fmt: skip
    plan = validate_catalog(docs).plans[0]
    assert str(plan.platform_fee) == "0.1"
    assert str(plan.prices[0].versions[0].unit_price) == "0.3"


def test_shipped_demo_catalog_is_valid_and_current():
    assert load_catalog(REPO / "catalog").customers
    assert demo_catalog_main(["--check"]) == 0


def test_a_broken_catalog_fails_the_asset_and_applies_nothing(tmp_path):
    good = tmp_path / "good"
    shutil.copytree(REPO / "tests" / "fixtures" / "catalog_e2e", good)
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))

    def run(directory: Path):
        return materialize(
            [pricing_catalog],
            resources={"catalog_dir": PricingCatalogDir(path=str(directory)),
                       "warehouse": warehouse},
            raise_on_error=False,
        )  # fmt: skip

    assert run(good).success
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    plans = yaml.safe_load((bad / "plans.yml").read_text())
    plans["plans"][0]["prices"][0]["versions"][0]["unit_price"] = "-1"
    plans["plans"][0]["currency"] = "XXX"
    (bad / "plans.yml").write_text(yaml.safe_dump(plans))
    (bad / "customers.yml").write_text(
        "customers:\n  - {customer_id: cus_a, name: A, currency: USD}\n"
    )

    result = run(bad)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "4 problem(s); nothing was applied" in failure.message
    with duckdb.connect(warehouse.path, read_only=True) as con:
        assert con.sql("select count(*) from catalog.customers").fetchone() == (3,)
        assert con.sql("select unit_price_per_token from catalog.price_tiers "
                       "where price_id = 'gpt-4o-uncached'").fetchone()[0] > 0  # fmt: skip


# --- the catalog directory as one unit: prices and wallets, all or nothing ---------------------

WALLET_A = (
    "wallets:\n"
    "  - wallet_id: wal_a\n"
    "    customer_id: cus_a\n"
    "    currency: USD\n"
    "    grants:\n"
    '      - {grant_id: g1, kind: purchased, amount: "{amount}", granted_at: 2026-10-01}\n'
)


def _catalog_dir(tmp_path: Path, name: str, grant: str = "100.00") -> Path:
    directory = tmp_path / name
    shutil.copytree(REPO / "tests" / "fixtures" / "catalog_e2e", directory)
    (directory / "wallets.yml").write_text(WALLET_A.replace("{amount}", grant))
    return directory


def _load(directory: Path, warehouse: Warehouse):
    return materialize(
        [pricing_catalog],
        resources={"catalog_dir": PricingCatalogDir(path=str(directory)), "warehouse": warehouse},
        raise_on_error=False,
    )


def _catalog_state(warehouse: Warehouse) -> dict[str, list[tuple]]:
    with duckdb.connect(warehouse.path, read_only=True) as con:
        return {
            table: con.sql(f"select * from catalog.{table} order by all").fetchall()
            for table in ("customers", "prices", "price_tiers", "wallets", "wallet_grants")
        }


def _failure(result) -> str:
    """The description of the step's Failure: what the operator reads first."""
    return result.get_step_failure_events()[0].event_specific_data.user_failure_data.description


def _negative_price(directory: Path) -> None:
    plans = directory / "plans.yml"
    text = plans.read_text()
    assert text.count('unit_price: "2.50"') == 1
    plans.write_text(text.replace('unit_price: "2.50"', 'unit_price: "-2.50"'))


def test_a_negative_price_applies_neither_prices_nor_the_valid_wallets(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    assert _load(_catalog_dir(tmp_path, "v1"), warehouse).success
    before = _catalog_state(warehouse)
    assert before["wallet_grants"][0][:4] == ("wal_a", "g1", "purchased", D("100.00"))

    # The wallets change validly (a bigger grant), a price breaks its contract.
    v2 = _catalog_dir(tmp_path, "v2", grant="250.00")
    _negative_price(v2)
    result = _load(v2, warehouse)

    assert not result.success
    assert _failure(result).startswith(
        f"the catalog in {v2} has 1 problem(s); nothing was applied (prices and wallets "
        "unchanged): fix them and run catalog_job again:\n"
        "  - plans.yml: plans[0] (plan_id=pro): prices.0.versions.0.unit_price: Input should "
        "be greater than or equal to 0"
    )
    assert _catalog_state(warehouse) == before  # the wallet grant is still 100.00


def test_a_broken_wallet_file_applies_no_price_change_either(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    assert _load(_catalog_dir(tmp_path, "v1"), warehouse).success
    before = _catalog_state(warehouse)

    v2 = _catalog_dir(tmp_path, "v2", grant="-5")
    plans = v2 / "plans.yml"
    plans.write_text(plans.read_text().replace('unit_price: "2.50"', 'unit_price: "2.00"'))
    result = _load(v2, warehouse)

    assert not result.success
    assert "  - wallets.yml: wallets[0] (wallet_id=wal_a): grants.0.amount:" in _failure(result)
    assert _catalog_state(warehouse) == before  # gpt-4o input still at 2.50 per 1M


# customers.yml of the e2e fixture with a bad line 4: a value indented under a flow mapping.
BROKEN_CUSTOMERS = (
    "customers:\n"
    "  - {customer_id: cus_a, name: Customer A, currency: USD}\n"
    "  - {customer_id: cus_b, name: Customer B, currency: USD}\n"
    "    currency: USD\n"
    "  - {customer_id: cus_j, name: Customer J, currency: JPY}\n"
)


def test_a_yaml_syntax_error_is_one_problem_with_file_line_and_column(tmp_path):
    directory = _catalog_dir(tmp_path, "broken")
    (directory / "customers.yml").write_text(BROKEN_CUSTOMERS)
    # The parser stops where the stray mapping starts: line 4, column 5 (1-based).
    assert BROKEN_CUSTOMERS.splitlines()[3][4:] == "currency: USD"

    with pytest.raises(CatalogError) as info:
        load_catalog_dir(directory)

    # Nothing else about customers.yml, and no follow-on problem elsewhere (subscriptions and
    # wallets naming customers of the unreadable file are not judged against it).
    assert [str(p) for p in info.value.problems] == [
        "customers.yml:4:5: not valid YAML: expected <block end>, but found '<block mapping "
        "start>' (while parsing a block collection begun at line 2, column 3) (expected: valid "
        "YAML)"
    ]


def test_a_yaml_error_and_a_problem_in_another_file_are_both_listed(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    directory = _catalog_dir(tmp_path, "broken")
    (directory / "customers.yml").write_text(
        "customers:\n  - {customer_id: cus_a, name: A, currency: USD\n  - {customer_id: cus_b}\n"
    )
    _negative_price(directory)

    result = _load(directory, warehouse)

    assert not result.success
    assert _failure(result).split("\n")[1:] == [
        "  - customers.yml:3:5: not valid YAML: expected ',' or '}', but got '{' (while "
        "parsing a flow mapping begun at line 2, column 5) (expected: valid YAML)",
        "  - plans.yml: plans[0] (plan_id=pro): prices.0.versions.0.unit_price: Input should be "
        "greater than or equal to 0",
    ]
    with duckdb.connect(warehouse.path) as con:
        assert con.sql(
            "select count(*) from information_schema.tables where table_schema = 'catalog'"
        ).fetchone() == (0,)


def test_cost_plus_spend_caps_and_limits_are_validated_with_clear_errors():
    cost_plus = {"effective_from": "2026-01-01", "markup": "0.12345"}
    docs = documents(
        plans=[{
            "plan_id": "p1", "name": "P1", "currency": "USD", "max_spend": "0",
            "prices": [
                price("a", pricing="cost_plus", versions=[cost_plus]),
                price("b", pricing="cost_plus", meter="requests",
                      versions=[{"effective_from": "2026-01-01", "markup": "0.2"}]),
                price("c", versions=[{"effective_from": "2026-01-01", "unit_price": "1",
                                      "markup": "0.2"}], selector={"model": "n"}),
                price("d", pricing="cost_plus", selector={"model": "o"},
                      versions=[{"effective_from": "2026-01-01"}]),
            ],
            "limits": [
                {"limit_id": "t", "metric": "tokens", "max": "10.5"},
                {"limit_id": "s", "metric": "spend", "max": "5", "alert_at": [0, 80]},
                {"limit_id": "s", "metric": "spend", "max": "5"},
            ],
        }],
        overrides=[{"customer_id": "c1"}],
    )  # fmt: skip
    assert problems_of(docs) == [
        "plans.yml: plans[0] (plan_id=p1): max_spend: Input should be greater than 0",
        "plans.yml: plans[0] (plan_id=p1): limits.0: Value error, a tokens limit's max is a "
        "whole number",
        "plans.yml: plans[0] (plan_id=p1): limits.1: Value error, alert_at: distinct "
        "percentages from 1 to 1000",
        "plans.yml: plans[0] (plan_id=p1): prices.0: Value error, versions[0]: markup 0.12345 "
        "has more than 4 decimals",
        "plans.yml: plans[0] (plan_id=p1): prices.1: Value error, a cost_plus price meters "
        "what the provider cost card prices: uncached_input, cached_input, cache_write, output "
        "(not requests)",
        "plans.yml: plans[0] (plan_id=p1): prices.2: Value error, versions[0]: markup and "
        "floor_unit_price are for cost_plus prices",
        "plans.yml: plans[0] (plan_id=p1): prices.3: Value error, versions[0]: a cost_plus "
        "price needs markup (and no unit_price or tiers)",
        "overrides.yml: overrides[0] (customer_id=c1): -: Value error, an override needs "
        "prices, max_spend or limits",
    ]


def test_cost_plus_caps_and_limits_load_into_their_tables(tmp_path):
    docs = documents(
        plans=[{
            "plan_id": "p1", "name": "P1", "currency": "USD", "max_spend": "500",
            "prices": [price("a", pricing="cost_plus", unit="1M", max_spend="100", versions=[
                {"effective_from": "2026-01-01", "markup": "0.2", "floor_unit_price": "1.5"}])],
            "limits": [{"limit_id": "t", "metric": "tokens", "max": 1000, "model": "gpt-*"}],
        }],
        overrides=[{"customer_id": "c1", "max_spend": "50",
                    "limits": [{"limit_id": "t", "metric": "tokens", "max": 10}]}],
    )  # fmt: skip
    from orchestration.defs.rating.catalog import catalog_tables, read_provider_costs

    catalog = validate_catalog(docs)
    card = tmp_path / "provider_costs.csv"
    shutil.copy(REPO / "tests" / "fixtures" / "catalog_e2e" / "provider_costs.csv", card)
    tables = catalog_tables(catalog, read_provider_costs(card))
    assert tables["price_versions"].select("markup", "floor_per_token").rows() == [
        (D("0.2"), D("0.0000015"))
    ]
    assert tables["spend_caps"].rows() == [
        ("plan", "p1", None, None, D(500)),
        ("plan", "p1", None, "a", D(100)),
        ("customer", None, "c1", None, D(50)),
    ]
    assert tables["quota_limits"].select("scope", "limit_id", "max_value", "enforcement",
                                         "model_like", "alert_percents").rows() == [
        ("plan", "t", D(1000), "hard", "gpt-%", [80, 100]),
        ("customer", "t", D(10), "hard", None, [80, 100]),
    ]  # fmt: skip
