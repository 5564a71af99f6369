"""Writes the demo pricing catalog (``catalog/*.yml``) for the generator's customers.

    python -m tools.generator.demo_catalog            # rewrite catalog/
    python -m tools.generator.demo_catalog --check    # fail if catalog/ is stale

The catalog is hand-editable YAML; this script only produced the shipped version, so that it
covers exactly the customers, subscriptions and models of the demo data (seed 7), and every
pricing model appears at least once:

- ``starter`` (USD): per-unit prices at 1.5x provider list price, per 1M tokens, a per-request
  fee (per 1K requests); failed attempts are not billed.
- ``pro`` (USD): 1.3x list, $99 platform fee; graduated tiers on Claude Sonnet output; 5M free
  Gemini Flash input tokens a month (allowance); a GPT-4o output price cut from 2026-10-15
  (a second price version).
- ``enterprise`` (USD): 1.15x list, $2,000 platform fee, $25,000 minimum spend; volume tiers
  on Claude cached input (a model-family pattern); requests in packages of 1,000 (rounded up).
- ``pro-jpy`` (JPY, 150 JPY/USD): the pro prices in yen, for the one customer billed in JPY.
- The largest customer has negotiated (override) prices on Bedrock Claude Sonnet.
- One customer upgrades from starter to pro on 2026-10-16 (two subscriptions, prorated fees).
- ``cost-plus`` (USD): provider cost + 25% on every model the card prices (cost-plus pricing),
  output at least $0.50 per 1M tokens (a floor), for the largest starter customer.
- Spend controls, as customer overrides: a pro customer capped at $20.00 of usage a month
  (``max_spend``), and another with a hard limit of 6M tokens a month (crossed mid-month in
  the default 200k-event demo), a soft limit on its GPT-4o requests and quota alerts.
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal

import numpy as np
import yaml

from orchestration.defs.rating.provider_card import read_card
from orchestration.settings import REPO_ROOT
from tools.generator.generate import MODELS, _customers

CATALOG_DIR = REPO_ROOT / "catalog"
SEED = 7
START = "2026-01-01"
UPGRADE_DAY = "2026-10-16"
JPY_PER_USD = Decimal(150)
MILLION = Decimal(1_000_000)
#: meter -> provider card column
METER_COLUMNS = {
    "uncached_input": "input_per_token",
    "cached_input": "cache_read_per_token",
    "cache_write": "cache_write_per_token",
    "output": "output_per_token",
}


def _card() -> dict[tuple[str, str], dict[str, Decimal]]:
    card = {}
    for row in read_card(CATALOG_DIR / "provider_costs.csv"):
        if row["effective_to"]:
            continue
        prices = {c: Decimal(row[c]) for c in METER_COLUMNS.values() if row[c]}
        prices.setdefault("cache_read_per_token", prices["input_per_token"])
        prices.setdefault("cache_write_per_token", prices["input_per_token"])
        card[(row["provider"], row["model"])] = prices
    return card


def _slug(model: str) -> str:
    return (
        model.replace("anthropic.", "bedrock-")
        .replace(":", "-")
        .replace(".", "-")
        .replace("@", "-")
    )


def _per_million(per_token: Decimal, markup: Decimal, fx: Decimal = Decimal(1)) -> str:
    value = (per_token * MILLION * markup * fx).normalize()
    return format(value, "f")


def _model_prices(card, markup: Decimal, fx: Decimal, prefix: str) -> list[dict]:
    prices = []
    for provider, model in MODELS:
        for meter, column in METER_COLUMNS.items():
            prices.append(
                {
                    "price_id": f"{prefix}-{_slug(model)}-{meter.replace('_', '-')}",
                    "meter": meter,
                    "selector": {"model": model, "provider": provider},
                    "pricing": "per_unit",
                    "unit": "1M",
                    "versions": [
                        {
                            "effective_from": START,
                            "unit_price": _per_million(card[(provider, model)][column], markup, fx),
                        }
                    ],
                }
            )
    return prices


def _find(prices: list[dict], price_id: str) -> dict:
    return next(p for p in prices if p["price_id"] == price_id)


def _pro_prices(card, fx: Decimal, prefix: str) -> list[dict]:
    markup = Decimal("1.3")
    prices = _model_prices(card, markup, fx, prefix)
    # Graduated tiers on Claude Sonnet output: cheaper per token as the month's volume grows.
    sonnet = _find(prices, f"{prefix}-claude-sonnet-4-5-output")
    base = Decimal(sonnet["versions"][0]["unit_price"])
    sonnet["pricing"] = "graduated"
    sonnet["versions"] = [
        {
            "effective_from": START,
            "tiers": [
                {"up_to": 10, "unit_price": format(base, "f")},
                {"up_to": 50, "unit_price": format((base * Decimal("0.9")).normalize(), "f")},
                {"up_to": None, "unit_price": format((base * Decimal("0.8")).normalize(), "f")},
            ],
        }
    ]
    # 5M free Gemini Flash input tokens per billing period.
    _find(prices, f"{prefix}-gemini-2-5-flash-uncached-input")["included"] = 5
    # A price cut on GPT-4o output from mid-October: a second version of the same price.
    gpt4o = _find(prices, f"{prefix}-gpt-4o-output")
    old = Decimal(gpt4o["versions"][0]["unit_price"])
    gpt4o["versions"].append(
        {
            "effective_from": "2026-10-15",
            "unit_price": format((old * Decimal("0.9")).normalize(), "f"),
        }
    )
    return prices


def _enterprise_prices(card) -> list[dict]:
    prices = _model_prices(card, Decimal("1.15"), Decimal(1), "ent")
    # Volume tiers on cached input of every direct Claude model (a family pattern, more
    # specific than nothing but less than the exact per-model prices, so it must replace them).
    for model in ("claude-sonnet-4-5", "claude-haiku-4-5"):
        prices.remove(_find(prices, f"ent-{model}-cached-input"))
    prices.append(
        {
            "price_id": "ent-claude-cached-input-volume",
            "meter": "cached_input",
            "selector": {"model": "claude-*", "provider": "anthropic"},
            "pricing": "volume",
            "unit": "1M",
            "description": "Volume pricing: the whole month's cached input at the tier it reaches.",
            "versions": [
                {
                    "effective_from": START,
                    "tiers": [
                        {"up_to": 50, "unit_price": "0.35"},
                        {"up_to": 500, "unit_price": "0.30"},
                        {"up_to": None, "unit_price": "0.25"},
                    ],
                }
            ],
        }
    )
    prices.append(
        {
            "price_id": "ent-requests-package",
            "meter": "requests",
            "selector": {"model": "*"},
            "pricing": "package",
            "unit": "1",
            "package_size": 1000,
            "package_rounding": "up",
            "description": "Request handling fee: $0.50 per started block of 1,000 requests.",
            "versions": [{"effective_from": START, "package_price": "0.50"}],
        }
    )
    return prices


def _starter_prices(card) -> list[dict]:
    prices = _model_prices(card, Decimal("1.5"), Decimal(1), "starter")
    prices.append(
        {
            "price_id": "starter-requests",
            "meter": "requests",
            "selector": {"model": "*"},
            "pricing": "per_unit",
            "unit": "1K",
            "versions": [{"effective_from": START, "unit_price": "0.10"}],
        }
    )
    return prices


#: Customers of the spend-control examples (seed 7): the largest starter customer, and two
#: mid-sized pro customers.
COST_PLUS_CUSTOMER = "cus_0035"
CAPPED_CUSTOMER = "cus_0040"
QUOTA_CUSTOMER = "cus_0013"


def _cost_plus_prices() -> list[dict]:
    prices = []
    for meter in METER_COLUMNS:
        version = {"effective_from": START, "markup": "0.25"}
        if meter == "output":
            version["floor_unit_price"] = "0.50"
        prices.append(
            {
                "price_id": f"cost-plus-{meter.replace('_', '-')}",
                "meter": meter,
                "selector": {"model": "*"},
                "pricing": "cost_plus",
                "unit": "1M",
                "description": "Provider list cost + 25% (output at least $0.50 per 1M).",
                "versions": [version],
            }
        )
    return prices


def _spend_control_overrides() -> list[dict]:
    return [
        {"customer_id": CAPPED_CUSTOMER, "max_spend": "20.00"},
        {
            "customer_id": QUOTA_CUSTOMER,
            "limits": [
                {"limit_id": "monthly-tokens", "metric": "tokens", "max": 6_000_000,
                 "enforcement": "hard", "alert_at": [50, 80, 100]},
                {"limit_id": "gpt-4o-requests", "metric": "requests", "max": 250,
                 "model": "gpt-4o*", "enforcement": "soft"},
            ],
        },
    ]  # fmt: skip


def build_catalog() -> dict[str, dict]:
    card = _card()
    c = _customers(SEED)
    ids, subs, plans = c.ids.to_list(), c.subscription_ids.to_list(), c.plans.to_list()
    order = np.argsort(-c.weights)  # biggest first
    whale = ids[order[0]]
    jpy_customer = ids[order[-1]]
    upgrader = next(ids[i] for i in order if plans[i] == "pro")

    customers, subscriptions = [], []
    for cid, sub, plan in zip(ids, subs, plans, strict=True):
        currency = "JPY" if cid == jpy_customer else "USD"
        customers.append(
            {
                "customer_id": cid,
                "name": f"Demo customer {cid[-4:]}",
                "currency": currency,
                # A payment-provider id of the shape Stripe gives (the export's `customer`).
                "stripe_customer_id": f"cus_TbDemo{cid[-4:]}",
            }
        )
        plan_id = "pro-jpy" if currency == "JPY" else plan
        if cid == COST_PLUS_CUSTOMER:
            plan_id = "cost-plus"
        if cid == upgrader:
            subscriptions.append(
                {
                    "subscription_id": f"{sub}-starter",
                    "customer_id": cid,
                    "plan_id": "starter",
                    "start": START,
                    "end": UPGRADE_DAY,
                }
            )
            subscriptions.append(
                {
                    "subscription_id": sub,
                    "customer_id": cid,
                    "plan_id": plan_id,
                    "start": UPGRADE_DAY,
                }
            )
        else:
            subscriptions.append(
                {"subscription_id": sub, "customer_id": cid, "plan_id": plan_id, "start": START}
            )

    plan_list = [
        {
            "plan_id": "starter",
            "name": "Starter",
            "currency": "USD",
            "bill_failed_attempts": False,
            "prices": _starter_prices(card),
        },
        {
            "plan_id": "pro",
            "name": "Pro",
            "currency": "USD",
            "platform_fee": "99.00",
            "prices": _pro_prices(card, Decimal(1), "pro"),
        },
        {
            "plan_id": "enterprise",
            "name": "Enterprise",
            "currency": "USD",
            "platform_fee": "2000.00",
            "minimum_spend": "25000.00",
            "prices": _enterprise_prices(card),
        },
        {
            "plan_id": "pro-jpy",
            "name": "Pro (JPY)",
            "currency": "JPY",
            "platform_fee": "14850",
            "prices": _pro_prices(card, JPY_PER_USD, "projpy"),
        },
        {
            "plan_id": "cost-plus",
            "name": "Cost plus 25%",
            "currency": "USD",
            "bill_failed_attempts": False,
            "prices": _cost_plus_prices(),
        },
    ]
    overrides = [
        {
            "customer_id": whale,
            "prices": [
                {
                    "price_id": f"{whale}-bedrock-sonnet-{meter.replace('_', '-')}",
                    "meter": meter,
                    "selector": {"model": "anthropic.claude-sonnet-4*", "provider": "aws.bedrock"},
                    "unit": "1M",
                    "description": "Negotiated rate: 5% over list.",
                    "versions": [
                        {
                            "effective_from": START,
                            "unit_price": _per_million(
                                card[("aws.bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0")][
                                    col
                                ],
                                Decimal("1.05"),
                            ),
                        }
                    ],
                }
                for meter, col in METER_COLUMNS.items()
            ],
        },
        *_spend_control_overrides(),
    ]
    return {
        "customers.yml": {"customers": customers},
        "plans.yml": {"plans": plan_list},
        "subscriptions.yml": {"subscriptions": subscriptions},
        "overrides.yml": {"overrides": overrides},
    }


HEADER = (
    "# The demo pricing catalog, written by `python -m tools.generator.demo_catalog`.\n"
    "# Edit by hand freely in a real deployment; see README, 'The catalog'.\n"
)


def render(documents: dict[str, dict]) -> dict[str, str]:
    return {
        name: HEADER + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
        for name, doc in documents.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if catalog/ is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render(build_catalog()).items():
        path = CATALOG_DIR / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python -m tools.generator.demo_catalog")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
