"""Loading the pricing catalog: YAML files -> validated contract -> ``catalog.*`` tables.

Nothing is written unless the whole catalog is valid; then every table is replaced in one
transaction, so the warehouse never holds half of an old catalog and half of a new one.
Prices are stored per token (unit price / unit size, exact: unit sizes are powers of ten)
and tier bounds, allowances and package sizes in tokens, so the rating SQL works in one unit.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import yaml

from contracts.catalog import (
    CURRENCY_EXPONENTS,
    FILES,
    PRICE_SCALE,
    UNITS,
    Catalog,
    CatalogError,
    Price,
    Problem,
    like_pattern,
    validate_catalog,
)

PROVIDER_COSTS_FILE = "provider_costs.csv"
MONEY = pl.Decimal(38, PRICE_SCALE)
_QUANTUM = Decimal(1).scaleb(-PRICE_SCALE)


def read_documents(directory: Path) -> tuple[dict[str, object], list[Problem]]:
    """Parse every catalog file; YAML syntax errors become problems with their line."""
    documents: dict[str, object] = {}
    problems: list[Problem] = []
    for name in FILES:
        path = directory / name
        if not path.exists():
            if name != "overrides.yml":
                problems.append(Problem(name, "-", "-", "file missing", f"{path}"))
            continue
        try:
            documents[name] = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else "-"
            problems.append(Problem(name, where, "-", f"not valid YAML: {exc}", "YAML"))
    return documents, problems


def load_catalog(directory: Path) -> Catalog:
    documents, problems = read_documents(directory)
    try:
        catalog = validate_catalog(documents)
    except CatalogError as exc:
        raise CatalogError(problems + exc.problems) from None
    if problems:
        raise CatalogError(problems)
    per_token_problems = [p for p in _price_rows(catalog)[1]]
    if per_token_problems:
        raise CatalogError(per_token_problems)
    return catalog


def read_provider_costs(path: Path) -> pl.DataFrame:
    """The provider cost card; a malformed card raises CatalogError naming line and column."""
    from orchestration.defs.rating.provider_card import CARD_COLUMNS

    name = path.name
    if not path.exists():
        raise CatalogError([Problem(name, "-", "-", "file missing", str(path))])
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != list(CARD_COLUMNS):
            raise CatalogError(
                [Problem(name, "line 1", "header", f"{reader.fieldnames}", ",".join(CARD_COLUMNS))]
            )
        rows = list(reader)
    raw = pl.DataFrame(rows, schema=dict.fromkeys(CARD_COLUMNS, pl.String))
    money = [c for c in CARD_COLUMNS if c.endswith("_per_token")]
    typed = raw.with_columns(
        *[
            pl.col(c).str.to_datetime("%Y-%m-%d", strict=False)
            for c in ("effective_from", "effective_to")
        ],
        *[pl.col(c).cast(MONEY, strict=False) for c in money],
    )
    problems = []
    for column in ("effective_from", "effective_to", *money):
        given = raw[column].is_not_null() & (raw[column] != "")
        bad = (given & typed[column].is_null()).arg_true().to_list()
        problems += [
            Problem(
                name,
                f"line {i + 2}",
                column,
                f"not valid: {raw[column][i]!r}",
                "a decimal number" if column in money else "a date YYYY-MM-DD",
            )
            for i in bad
        ]
    missing = (
        (
            typed["effective_from"].is_null()
            | typed["input_per_token"].is_null()
            | typed["output_per_token"].is_null()
        )
        .arg_true()
        .to_list()
    )
    problems += [
        Problem(
            name,
            f"line {i + 2}",
            "effective_from/input/output",
            "missing",
            "every row has effective_from, input_per_token and output_per_token",
        )
        for i in missing
        if not any(p.entry == f"line {i + 2}" for p in problems)
    ]
    if problems:
        raise CatalogError(problems)
    return typed


def _per_token(amount: Decimal, unit_size: int, where: str, owner: str) -> tuple[Decimal, list]:
    value = amount / unit_size
    exact = value.quantize(_QUANTUM)
    if exact != value:
        return exact, [
            Problem(
                where,
                owner,
                "unit_price",
                f"{amount} per {unit_size} tokens has more than {PRICE_SCALE} decimals per token",
                "a coarser price or a larger unit",
            )
        ]
    return exact, []


def _price_rows(catalog: Catalog) -> tuple[dict[str, list[dict]], list[Problem]]:
    prices, versions, tiers, problems = [], [], [], []
    owners: list[tuple[str, str, str | None, str | None, list[Price]]] = [
        ("plans.yml", "plan", p.plan_id, None, p.prices) for p in catalog.plans
    ] + [("overrides.yml", "customer", None, o.customer_id, o.prices) for o in catalog.overrides]
    for file, scope, plan_id, customer_id, plist in owners:
        for price in plist:
            size = UNITS[price.unit]
            s = price.selector
            prices.append(
                {
                    "price_id": price.price_id,
                    "scope": scope,
                    "plan_id": plan_id,
                    "customer_id": customer_id,
                    "meter": price.meter,
                    "selector_model": s.model,
                    "model_like": like_pattern(s.model),
                    "provider": s.provider,
                    "feature": s.feature,
                    "environment": s.environment,
                    # Customer overrides beat plan prices, then the more specific selector wins.
                    "specificity": (10_000 if scope == "customer" else 0) + s.specificity,
                    "pricing_model": price.pricing,
                    "unit": price.unit,
                    "unit_size": size,
                    "included_tokens": price.included * size,
                    "package_size_tokens": (price.package_size or 0) * size or None,
                    "package_rounding": price.package_rounding
                    if price.pricing == "package"
                    else None,
                    "description": price.description,
                }
            )
            ordered = sorted(price.versions, key=lambda v: v.effective_from)
            for number, v in enumerate(ordered, start=1):
                nxt = ordered[number].effective_from if number < len(ordered) else None
                versions.append(
                    {
                        "price_id": price.price_id,
                        "price_version": number,
                        "effective_from": v.effective_from,
                        "effective_to": v.effective_to or nxt,
                        "package_price": v.package_price,
                    }
                )
                if price.pricing == "per_unit":
                    spec = [(None, v.unit_price, Decimal(0))]
                elif price.pricing == "package":
                    spec = []
                else:
                    spec = [(t.up_to, t.unit_price, t.flat_fee) for t in v.tiers or []]
                lower = 0
                for index, (up_to, unit_price, flat_fee) in enumerate(spec, start=1):
                    per_token, issues = _per_token(unit_price, size, file, price.price_id)
                    problems += issues
                    upper = None if up_to is None else up_to * size
                    tiers.append(
                        {
                            "price_id": price.price_id,
                            "price_version": number,
                            "tier": index,
                            "lower_tokens": lower,
                            "upper_tokens": upper,
                            "unit_price_per_token": per_token,
                            "flat_fee": flat_fee,
                        }
                    )
                    lower = upper if upper is not None else lower
    return {"prices": prices, "price_versions": versions, "price_tiers": tiers}, problems


_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "currencies": {"currency": pl.String, "minor_unit_exponent": pl.Int32},
    "customers": {
        "customer_id": pl.String, "name": pl.String, "currency": pl.String,
        "stripe_customer_id": pl.String,
    },
    "plans": {
        "plan_id": pl.String, "name": pl.String, "currency": pl.String,
        "bill_failed_attempts": pl.Boolean, "platform_fee": MONEY, "minimum_spend": MONEY,
    },
    "subscriptions": {
        "subscription_id": pl.String, "customer_id": pl.String, "plan_id": pl.String,
        "starts_at": pl.Datetime("us"), "ends_at": pl.Datetime("us"),
        "billing_anchor_day": pl.Int32,
    },
    "prices": {
        "price_id": pl.String, "scope": pl.String, "plan_id": pl.String,
        "customer_id": pl.String, "meter": pl.String, "selector_model": pl.String,
        "model_like": pl.String, "provider": pl.String, "feature": pl.String,
        "environment": pl.String, "specificity": pl.Int32, "pricing_model": pl.String,
        "unit": pl.String, "unit_size": pl.Int64, "included_tokens": pl.Int64,
        "package_size_tokens": pl.Int64, "package_rounding": pl.String,
        "description": pl.String,
    },
    "price_versions": {
        "price_id": pl.String, "price_version": pl.Int32, "effective_from": pl.Datetime("us"),
        "effective_to": pl.Datetime("us"), "package_price": MONEY,
    },
    "price_tiers": {
        "price_id": pl.String, "price_version": pl.Int32, "tier": pl.Int32,
        "lower_tokens": pl.Int64, "upper_tokens": pl.Int64, "unit_price_per_token": MONEY,
        "flat_fee": MONEY,
    },
}  # fmt: skip


def catalog_tables(catalog: Catalog, provider_costs: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The ``catalog.*`` tables, as frames with their warehouse types."""
    price_rows, _ = _price_rows(catalog)
    rows = {
        "currencies": [
            {"currency": c, "minor_unit_exponent": e} for c, e in sorted(CURRENCY_EXPONENTS.items())
        ],
        "customers": [c.model_dump() for c in catalog.customers],
        "plans": [p.model_dump(exclude={"prices"}) for p in catalog.plans],
        "subscriptions": [
            {
                "subscription_id": s.subscription_id,
                "customer_id": s.customer_id,
                "plan_id": s.plan_id,
                "starts_at": s.start,
                "ends_at": s.end,
                "billing_anchor_day": s.billing_anchor_day,
            }
            for s in catalog.subscriptions
        ],
        **price_rows,
    }
    tables = {
        name: pl.DataFrame(rows[name], schema=schema, orient="row")
        if rows[name]
        else pl.DataFrame(schema=schema)
        for name, schema in _SCHEMAS.items()
    }
    tables["provider_costs"] = provider_costs
    return tables


def write_catalog(con: duckdb.DuckDBPyConnection, tables: dict[str, pl.DataFrame]) -> None:
    """Replace every ``catalog.*`` table in one transaction."""
    con.execute("begin transaction")
    try:
        con.execute("create schema if not exists catalog")
        for name, frame in tables.items():
            con.register("incoming", frame.to_arrow())
            con.execute(f"create or replace table catalog.{name} as select * from incoming")
            con.unregister("incoming")
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
