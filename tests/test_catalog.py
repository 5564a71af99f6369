"""The catalog contract: a broken catalog is rejected whole, with every problem listed."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster import materialize

from contracts.catalog import CatalogError, validate_catalog
from orchestration.defs.rating.assets import pricing_catalog
from orchestration.defs.rating.catalog import load_catalog
from orchestration.defs.rating.resources import PricingCatalogDir
from orchestration.defs.resources import Warehouse
from orchestration.generator.demo_catalog import main as demo_catalog_main

REPO = Path(__file__).resolve().parent.parent


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
        "plans.yml: plans[0] (plan_id=p1): prices.0.meter: Input should be 'uncached_input', "
        "'cached_input', 'cache_write', 'output', 'reasoning' or 'requests' "
        "(expected: 'uncached_input', 'cached_input', 'cache_write', 'output', 'reasoning' or "
        "'requests')",
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
