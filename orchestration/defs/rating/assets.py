"""``pricing_catalog``: the catalog files, validated and written to ``catalog.*`` tables.

One multi-asset: the tables are written together or not at all, and each is an asset of its
own (``catalog/customers``, ``catalog/prices``...), the dbt sources of the dimension views.
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
from orchestration.defs.rating.catalog import (
    PROVIDER_COSTS_FILE,
    catalog_tables,
    load_catalog,
    read_provider_costs,
    write_catalog,
)
from orchestration.defs.rating.resources import PricingCatalogDir
from orchestration.defs.resources import WAREHOUSE_POOL, Warehouse

CATALOG_TABLES = {
    "currencies": "ISO 4217 currencies accepted, with minor-unit exponents.",
    "customers": "Customers and their billing currency (customers.yml).",
    "plans": "Plans: currency, platform fee, minimum spend, failed-attempt rule (plans.yml).",
    "subscriptions": "Which plan each customer is on, when (subscriptions.yml).",
    "prices": "Prices of plans and customer overrides: meter, selector, pricing model.",
    "price_versions": "Effective-dated versions of each price.",
    "price_tiers": "Tiers of each price version, in tokens and per-token prices.",
    "provider_costs": "The provider cost card (provider_costs.csv).",
}


@multi_asset(
    name="pricing_catalog",
    specs=[
        AssetSpec(
            ["catalog", table],
            description=f"{text} Loaded by pricing_catalog from the catalog directory.",
            group_name="catalog",
            kinds={"yaml", "duckdb"},
            owners=["team:billing"],
        )
        for table, text in CATALOG_TABLES.items()
    ],
    description=(
        "The pricing catalog (customers, plans, subscriptions, prices, customer overrides) "
        "and the provider cost card, read from the catalog directory, validated against "
        "contracts/catalog.py and written to the catalog.* tables in one transaction. A "
        "catalog that breaks its contract fails with every problem listed; nothing is applied."
    ),
    pool=WAREHOUSE_POOL,
)
def pricing_catalog(
    context: AssetExecutionContext, catalog_dir: PricingCatalogDir, warehouse: Warehouse
):
    directory = catalog_dir.directory
    try:
        catalog = load_catalog(directory)
        provider_costs = read_provider_costs(directory / PROVIDER_COSTS_FILE)
    except CatalogError as exc:
        raise Failure(
            description=str(exc),
            metadata={"problems": MetadataValue.md(_problem_table(exc))},
        ) from None
    tables = catalog_tables(catalog, provider_costs)
    with warehouse.connect() as con:
        write_catalog(con, tables)
    plans: pl.DataFrame = tables["plans"]
    context.log.info(f"loaded catalog from {directory}")
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


def _problem_table(exc: CatalogError) -> str:
    rows = [
        f"| {p.file} | {p.entry} | {p.field} | {p.what} | {p.expected} |".replace("\n", " ")
        for p in exc.problems
    ]
    return "| file | entry | field | problem | expected |\n|---|---|---|---|---|\n" + "\n".join(
        rows
    )
