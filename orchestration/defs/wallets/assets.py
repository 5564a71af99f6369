"""Prepaid wallets: the wallet catalog (the ledger asset is in ``ledger_asset.py``).

- ``wallet_catalog`` (multi-asset, unpartitioned): ``wallets.yml`` from the catalog directory,
  validated against ``contracts/wallets.py`` (customer exists, same currency, one wallet per
  customer...) and written to ``catalog.wallets``, ``catalog.wallet_grants`` and
  ``catalog.wallet_alerts`` in one transaction; a broken file fails with every problem listed
  and nothing is applied. No file means no wallets.
- ``billing/wallet_ledger``: see :mod:`orchestration.defs.wallets.ledger_asset`.
"""

from pathlib import Path

import polars as pl
import yaml
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pydantic import ValidationError

from contracts.catalog import PRICE_SCALE, CatalogError, Customer, Problem
from contracts.wallets import WALLETS_FILE, Wallet, validate_wallets
from orchestration.defs.rating.assets import _problem_table
from orchestration.defs.rating.catalog import write_catalog
from orchestration.defs.rating.resources import PricingCatalogDir
from orchestration.defs.resources import WAREHOUSE_POOL, Warehouse

MONEY = pl.Decimal(38, PRICE_SCALE)
OWNERS = ["team:billing"]

# ---------------------------------------------------------------------------------------------
# The wallet catalog


def read_customers(directory: Path) -> dict[str, str]:
    """customer_id -> currency of the valid entries of customers.yml (pricing_catalog reports
    the broken ones)."""
    path = directory / "customers.yml"
    if not path.exists():
        raise CatalogError([Problem("customers.yml", "-", "-", "file missing", str(path))])
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CatalogError(
            [Problem("customers.yml", "-", "-", f"not valid YAML: {exc}", "YAML")]
        ) from None
    customers = {}
    for raw in doc.get("customers") or [] if isinstance(doc, dict) else []:
        try:
            c = Customer.model_validate(raw)
        except ValidationError:
            continue
        customers[c.customer_id] = c.currency
    return customers


def load_wallets(directory: Path) -> list[Wallet]:
    """Validate ``wallets.yml`` (optional) against customers.yml; raise CatalogError."""
    path = directory / WALLETS_FILE
    if not path.exists():
        return []
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        raise CatalogError(
            [Problem(WALLETS_FILE, where, "-", f"not valid YAML: {exc}", "YAML")]
        ) from None
    return validate_wallets(document, read_customers(directory))


WALLET_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "wallets": {
        "wallet_id": pl.String, "customer_id": pl.String, "currency": pl.String,
        "auto_top_up_threshold": MONEY, "auto_top_up_amount": MONEY,
        "auto_top_up_max_per_period": pl.Int32, "auto_top_up_priority": pl.Int32,
    },
    "wallet_grants": {
        "wallet_id": pl.String, "grant_id": pl.String, "kind": pl.String, "amount": MONEY,
        "granted_at": pl.Datetime("us"), "expires_at": pl.Datetime("us"), "priority": pl.Int32,
    },
    "wallet_alerts": {
        "wallet_id": pl.String, "customer_id": pl.String, "currency": pl.String,
        "threshold": MONEY,
    },
}  # fmt: skip

WALLET_TABLES = {
    "wallets": "Prepaid wallets: customer, currency and auto top-up rule (wallets.yml).",
    "wallet_grants": "Credit grants of each wallet: kind, amount, validity, priority.",
    "wallet_alerts": "Low-balance alert thresholds of each wallet.",
}


def wallet_tables(wallets: list[Wallet]) -> dict[str, pl.DataFrame]:
    rows: dict[str, list[dict]] = {"wallets": [], "wallet_grants": [], "wallet_alerts": []}
    for w in wallets:
        rule = w.auto_top_up
        rows["wallets"].append(
            {
                "wallet_id": w.wallet_id,
                "customer_id": w.customer_id,
                "currency": w.currency,
                "auto_top_up_threshold": rule.threshold if rule else None,
                "auto_top_up_amount": rule.amount if rule else None,
                "auto_top_up_max_per_period": rule.max_per_period if rule else None,
                "auto_top_up_priority": rule.priority if rule else None,
            }
        )
        rows["wallet_grants"] += [
            {"wallet_id": w.wallet_id, **g.model_dump(include=set(WALLET_SCHEMAS["wallet_grants"]))}
            for g in w.grants
        ]
        rows["wallet_alerts"] += [
            {"wallet_id": w.wallet_id, "customer_id": w.customer_id, "currency": w.currency,
             "threshold": t}
            for t in w.low_balance_alerts
        ]  # fmt: skip
    return {
        name: pl.DataFrame(rows[name], schema=schema, orient="row")
        if rows[name]
        else pl.DataFrame(schema=schema)
        for name, schema in WALLET_SCHEMAS.items()
    }


@multi_asset(
    name="wallet_catalog",
    specs=[
        AssetSpec(
            ["catalog", table],
            description=f"{text} Loaded by wallet_catalog from the catalog directory.",
            group_name="wallets",
            kinds={"yaml", "duckdb"},
            owners=OWNERS,
        )
        for table, text in WALLET_TABLES.items()
    ],
    description=(
        "Prepaid wallets (wallets.yml in the catalog directory, optional), validated against "
        "contracts/wallets.py and customers.yml, written to catalog.wallets, "
        "catalog.wallet_grants and catalog.wallet_alerts in one transaction. A file that "
        "breaks its contract fails with every problem listed; nothing is applied."
    ),
    pool=WAREHOUSE_POOL,
)
def wallet_catalog(
    context: AssetExecutionContext, catalog_dir: PricingCatalogDir, warehouse: Warehouse
):
    directory = catalog_dir.directory
    try:
        wallets = load_wallets(directory)
    except CatalogError as exc:
        raise Failure(
            description=str(exc).replace("the pricing catalog", WALLETS_FILE),
            metadata={"problems": MetadataValue.md(_problem_table(exc))},
        ) from None
    tables = wallet_tables(wallets)
    with warehouse.connect() as con:
        write_catalog(con, tables)
    context.log.info(f"loaded {len(wallets)} wallet(s) from {directory / WALLETS_FILE}")
    for name, frame in tables.items():
        yield MaterializeResult(
            asset_key=["catalog", name],
            metadata={"directory": str(directory), "dagster/row_count": frame.height},
        )
