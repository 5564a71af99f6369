"""Loading the catalog: YAML files -> validated contracts -> ``catalog.*`` tables.

The catalog directory holds the pricing catalog (customers, plans, subscriptions, overrides),
the provider cost card and the wallets. :func:`load_catalog_dir` validates all of it together
and reports every problem of every file; nothing is written unless all of it is valid, and
then every table (prices and wallets alike) is replaced in one transaction
(:func:`write_catalog`), so the warehouse never holds half of an old catalog and half of a new
one. Prices are stored per token (unit price / unit size, exact: unit sizes are powers of ten)
and tier bounds, allowances and package sizes in tokens, so the rating SQL works in one unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import yaml
from pydantic import ValidationError

from contracts.catalog import (
    CURRENCY_EXPONENTS,
    FILES,
    PRICE_SCALE,
    UNITS,
    Catalog,
    CatalogError,
    Customer,
    Price,
    Problem,
    like_pattern,
    validate_catalog,
)
from contracts.wallets import WALLETS_FILE, Wallet, validate_wallets
from orchestration.defs.rating.provider_card import (
    CARD_COLUMNS,
    PRICE_COLUMNS,
    card_problems,
    read_card,
)
from orchestration.defs.tables import MONEY, typed_frames
from orchestration.defs.wallets.catalog import wallet_tables
from orchestration.warehouse import DuckDBWarehouse, WarehouseTables

PROVIDER_COSTS_FILE = "provider_costs.csv"
#: Files a catalog directory may lack: no overrides, no wallets.
OPTIONAL_FILES = ("overrides.yml", WALLETS_FILE)
_QUANTUM = Decimal(1).scaleb(-PRICE_SCALE)


def yaml_problem(file: str, exc: yaml.YAMLError) -> Problem:
    """A YAML syntax error as one problem at the line and column where the parser stopped
    (1-based, as editors count), naming the construct it was reading when that began
    elsewhere (an unclosed ``{`` two lines up)."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        what += (
            f" ({context} begun at line {context_mark.line + 1}, column {context_mark.column + 1})"
        )
    elif context:
        what += f" ({context})"
    if mark is None:
        return Problem(file, "-", "-", f"not valid YAML: {what}", "valid YAML")
    line, column = mark.line + 1, mark.column + 1
    return Problem(
        file,
        f"line {line}, column {column}",
        "-",
        f"not valid YAML: {what}",
        "valid YAML",
        line=line,
        column=column,
    )


def problem_table(problems: list[Problem]) -> str:
    """Catalog problems as a Markdown table (file, entry, field, problem, expected), one row
    each: what the catalog load's failure shows in the UI."""
    rows = [
        f"| {p.file} | {p.entry} | {p.field} | {p.what} | {p.expected} |".replace("\n", " ")
        for p in problems
    ]
    return "| file | entry | field | problem | expected |\n|---|---|---|---|---|\n" + "\n".join(
        rows
    )


def read_documents(directory: Path) -> tuple[dict[str, object], list[Problem], frozenset[str]]:
    """Parse every catalog file: (documents, problems, names of the files that could not be
    parsed). A file with a syntax error is one problem and nothing else is said about it."""
    documents: dict[str, object] = {}
    problems: list[Problem] = []
    unreadable: set[str] = set()
    for name in (*FILES, WALLETS_FILE):
        path = directory / name
        if not path.exists():
            if name not in OPTIONAL_FILES:
                problems.append(Problem(name, "-", "-", "file missing", f"{path}"))
                unreadable.add(name)
            continue
        try:
            documents[name] = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            problems.append(yaml_problem(name, exc))
            unreadable.add(name)
        except UnicodeDecodeError as exc:
            problems.append(
                Problem(name, f"byte {exc.start}", "-", "not UTF-8 text", "a UTF-8 YAML file")
            )
            unreadable.add(name)
    return documents, problems, frozenset(unreadable)


def load_catalog(directory: Path) -> Catalog:
    """The pricing catalog of ``directory`` (not the wallets); raise CatalogError listing
    every problem."""
    documents, problems, unreadable = read_documents(directory)
    problems = [p for p in problems if p.file != WALLETS_FILE]
    catalog, found = _validated_pricing(documents, unreadable - {WALLETS_FILE})
    problems += found
    if problems or catalog is None:
        raise CatalogError(problems)
    return catalog


def _validated_pricing(
    documents: dict[str, object], unreadable: frozenset[str]
) -> tuple[Catalog | None, list[Problem]]:
    """The pricing catalog of parsed ``documents`` (None if it does not validate) and every
    problem of its files, prices per token included."""
    try:
        catalog = validate_catalog(documents, unreadable)
    except CatalogError as exc:
        return None, exc.problems
    return catalog, _price_rows(catalog)[1]


@dataclass(frozen=True)
class LoadedCatalog:
    """Everything the catalog directory holds, validated together."""

    catalog: Catalog
    provider_costs: pl.DataFrame
    wallets: list[Wallet]

    def tables(self) -> dict[str, pl.DataFrame]:
        """Every ``catalog.*`` table: pricing, provider costs and wallets."""
        return {**catalog_tables(self.catalog, self.provider_costs), **wallet_tables(self.wallets)}


def load_catalog_dir(directory: Path) -> LoadedCatalog:
    """Validate the pricing catalog, the provider cost card and the wallets of ``directory``
    together; raise one CatalogError listing every problem of every file."""
    documents, problems, unreadable = read_documents(directory)
    catalog, found = _validated_pricing(documents, unreadable)
    problems += found
    provider_costs = None
    try:
        provider_costs = read_provider_costs(directory / PROVIDER_COSTS_FILE)
    except CatalogError as exc:
        problems += exc.problems
    wallets: list[Wallet] = []
    if WALLETS_FILE not in unreadable:
        customers = (
            None
            if "customers.yml" in unreadable
            else customer_currencies(documents.get("customers.yml"))
        )
        try:
            wallets = validate_wallets(documents.get(WALLETS_FILE), customers)
        except CatalogError as exc:
            problems += exc.problems
    if problems or catalog is None or provider_costs is None:
        raise CatalogError(problems)
    return LoadedCatalog(catalog, provider_costs, wallets)


def customer_currencies(document: object) -> dict[str, str]:
    """customer_id -> currency of the valid entries of customers.yml (the broken ones are
    reported by the pricing catalog's validation)."""
    entries = document.get("customers") if isinstance(document, dict) else None
    customers = {}
    for raw in entries if isinstance(entries, list) else []:
        try:
            c = Customer.model_validate(raw)
        except ValidationError:
            continue
        customers[c.customer_id] = c.currency
    return customers


def read_provider_costs(path: Path) -> pl.DataFrame:
    """The provider cost card, typed; a malformed card raises CatalogError naming line and
    column."""
    name = path.name
    rows = read_card(path)
    raw = pl.DataFrame(rows, schema=dict.fromkeys(CARD_COLUMNS, pl.String))
    money = list(PRICE_COLUMNS)
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
    if not problems:
        problems += [Problem(name, *problem) for problem in card_problems(rows)]
    if problems:
        raise CatalogError(problems)
    return typed


def _per_token(
    amount: Decimal, unit_size: int, where: str, owner: str, field: str = "unit_price"
) -> tuple[Decimal, list]:
    value = amount / unit_size
    exact = value.quantize(_QUANTUM)
    if exact != value:
        return exact, [
            Problem(
                where,
                owner,
                field,
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
                floor = None
                if v.floor_unit_price is not None:
                    floor, issues = _per_token(
                        v.floor_unit_price, size, file, price.price_id, "floor_unit_price"
                    )
                    problems += issues
                versions.append(
                    {
                        "price_id": price.price_id,
                        "price_version": number,
                        "effective_from": v.effective_from,
                        "effective_to": v.effective_to or nxt,
                        "package_price": v.package_price,
                        "markup": v.markup,
                        "floor_per_token": floor,
                    }
                )
                if price.pricing == "per_unit":
                    spec = [(None, v.unit_price, Decimal(0))]
                elif price.pricing in ("package", "cost_plus"):
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
        "effective_to": pl.Datetime("us"), "package_price": MONEY, "markup": MONEY,
        "floor_per_token": MONEY,
    },
    "spend_caps": {
        "scope": pl.String, "plan_id": pl.String, "customer_id": pl.String,
        "price_id": pl.String, "max_spend": MONEY,
    },
    "quota_limits": {
        "scope": pl.String, "plan_id": pl.String, "customer_id": pl.String,
        "limit_id": pl.String, "metric": pl.String, "max_value": MONEY,
        "enforcement": pl.String, "selector_model": pl.String, "model_like": pl.String,
        "feature": pl.String, "alert_percents": pl.List(pl.Int32),
    },
    "price_tiers": {
        "price_id": pl.String, "price_version": pl.Int32, "tier": pl.Int32,
        "lower_tokens": pl.Int64, "upper_tokens": pl.Int64, "unit_price_per_token": MONEY,
        "flat_fee": MONEY,
    },
}  # fmt: skip


def _control_rows(catalog: Catalog) -> dict[str, list[dict]]:
    """Spend caps and quota limits, one row per cap or limit with its owner (a plan or a
    customer's override). ``price_id`` null: the cap of the whole subscription."""
    caps, limits = [], []
    owners = [("plan", p.plan_id, None, p) for p in catalog.plans] + [
        ("customer", None, o.customer_id, o) for o in catalog.overrides
    ]
    for scope, plan_id, customer_id, owner in owners:
        key = {"scope": scope, "plan_id": plan_id, "customer_id": customer_id}
        if owner.max_spend is not None:
            caps.append({**key, "price_id": None, "max_spend": owner.max_spend})
        caps += [
            {**key, "price_id": p.price_id, "max_spend": p.max_spend}
            for p in owner.prices
            if p.max_spend is not None
        ]
        limits += [
            {
                **key,
                "limit_id": q.limit_id,
                "metric": q.metric,
                "max_value": q.max,
                "enforcement": q.enforcement,
                "selector_model": q.model,
                "model_like": like_pattern(q.model) if q.model else None,
                "feature": q.feature,
                "alert_percents": sorted(q.alert_at),
            }
            for q in owner.limits
        ]
    return {"spend_caps": caps, "quota_limits": limits}


def catalog_tables(catalog: Catalog, provider_costs: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The ``catalog.*`` tables, as frames with their warehouse types."""
    price_rows, _ = _price_rows(catalog)
    rows = {
        "currencies": [
            {"currency": c, "minor_unit_exponent": e} for c, e in sorted(CURRENCY_EXPONENTS.items())
        ],
        "customers": [c.model_dump() for c in catalog.customers],
        "plans": [p.model_dump(exclude={"prices", "max_spend", "limits"}) for p in catalog.plans],
        **_control_rows(catalog),
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
    tables = typed_frames(rows, _SCHEMAS)
    tables["provider_costs"] = provider_costs
    return tables


def write_catalog(
    con: duckdb.DuckDBPyConnection | WarehouseTables, tables: dict[str, pl.DataFrame]
) -> None:
    """Replace every ``catalog.*`` table (in one transaction on DuckDB), on either engine:
    a DuckDB connection or a ``WarehouseTables`` (orchestration/warehouse.py)."""
    target = DuckDBWarehouse(con) if isinstance(con, duckdb.DuckDBPyConnection) else con
    target.replace_tables("catalog", {name: frame.to_arrow() for name, frame in tables.items()})
