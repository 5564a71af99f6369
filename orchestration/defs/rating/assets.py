"""``pricing_catalog``: the catalog directory, validated and written to ``catalog.*`` tables.

One multi-asset for prices and wallets alike: every file is validated first (every problem of
every file listed), then all the tables are written in one transaction, or none is. Each table
is an asset of its own (``catalog/customers``, ``catalog/prices``, ``catalog/wallets``...), the
dbt sources of the dimension views and the wallet ledger's inputs.
"""

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from contracts.catalog import CatalogError
from contracts.wallets import WALLETS_FILE
from orchestration.defs.rating.catalog import load_catalog_dir, problem_table, write_catalog
from orchestration.defs.rating.resources import PricingCatalogDir
from orchestration.defs.resources import WAREHOUSE_POOL, Warehouse
from orchestration.defs.wallets.catalog import WALLET_TABLES

CATALOG_TABLES = {
    "currencies": "ISO 4217 currencies accepted, with minor-unit exponents.",
    "customers": "Customers and their billing currency (customers.yml).",
    "plans": "Plans: currency, platform fee, minimum spend, failed-attempt rule (plans.yml).",
    "subscriptions": "Which plan each customer is on, when (subscriptions.yml).",
    "prices": "Prices of plans and customer overrides: meter, selector, pricing model.",
    "price_versions": "Effective-dated versions of each price.",
    "price_tiers": "Tiers of each price version, in tokens and per-token prices.",
    "provider_costs": "The provider cost card (provider_costs.csv).",
    "spend_caps": "Spend caps (max_spend) of plans, overrides and prices, per billing period.",
    "quota_limits": "Quota limits of plans and overrides: metric, max, soft or hard, alerts.",
}
OWNERS = ["team:billing"]


def _spec(table: str, text: str, group: str) -> AssetSpec:
    return AssetSpec(
        ["catalog", table],
        description=f"{text} Loaded by pricing_catalog from the catalog directory.",
        group_name=group,
        kinds={"yaml", "duckdb"},
        owners=OWNERS,
    )


@multi_asset(
    name="pricing_catalog",
    specs=[_spec(t, text, "catalog") for t, text in CATALOG_TABLES.items()]
    + [_spec(t, text, "wallets") for t, text in WALLET_TABLES.items()],
    description=(
        "The catalog directory: the pricing catalog (customers, plans, subscriptions, prices, "
        "customer overrides), the provider cost card and the prepaid wallets (wallets.yml, "
        "optional), validated together against contracts/catalog.py and contracts/wallets.py "
        "and written to the catalog.* tables in one transaction. A directory with any problem "
        "fails with every problem of every file listed; nothing is applied, neither prices "
        "nor wallets."
    ),
    pool=WAREHOUSE_POOL,
)
def pricing_catalog(
    context: AssetExecutionContext, catalog_dir: PricingCatalogDir, warehouse: Warehouse
):
    directory = catalog_dir.directory
    try:
        loaded = load_catalog_dir(directory)
    except CatalogError as exc:
        listed = "\n".join(f"  - {p}" for p in exc.problems)
        raise Failure(
            description=f"the catalog in {directory} has {len(exc.problems)} problem(s); "
            "nothing was applied (prices and wallets unchanged): fix them and run catalog_job "
            f"again:\n{listed}",
            metadata={"problems": MetadataValue.md(problem_table(exc.problems))},
        ) from None
    tables = loaded.tables()
    with warehouse.tables() as con:
        write_catalog(con, tables)
    plans: pl.DataFrame = tables["plans"]
    context.log.info(
        f"loaded the catalog from {directory}: {len(loaded.catalog.customers)} customer(s), "
        f"{len(loaded.catalog.plans)} plan(s), {len(loaded.wallets)} wallet(s) "
        f"({WALLETS_FILE if loaded.wallets else 'no wallets'})"
    )
    for name, frame in tables.items():
        metadata = {"directory": str(directory), "dagster/row_count": frame.height}
        if name == "plans":
            metadata["plans"] = MetadataValue.md(
                "| plan | currency | platform fee | minimum spend |\n|---|---|---|---|\n"
                + "\n".join(
                    f"| {r['plan_id']} | {r['currency']} | {r['platform_fee']} | "
                    f"{r['minimum_spend']} |"
                    for r in plans.to_dicts()
                )
            )
        yield MaterializeResult(asset_key=["catalog", name], metadata=metadata)
