"""The prepaid-wallet contract: ``wallets.yml`` in the catalog directory (optional file).

A wallet holds a customer's prepaid credit in the customer's currency as *grants* (purchased
or promotional, each with its own validity window and priority), optional low-balance alert
thresholds and an optional auto top-up rule. Rated usage draws the grants down (see
``orchestration/defs/wallets/ledger.py`` for the rules).

Same error style as :mod:`contracts.catalog`: :func:`validate_wallets` returns every problem
found, each naming the file, the entry, the field, what is wrong and what is expected, and
raises :class:`~contracts.catalog.CatalogError` listing them all; nothing is applied.

```yaml
wallets:
  - wallet_id: wal_cus_0010
    customer_id: cus_0010
    currency: USD                      # must equal the customer's currency
    low_balance_alerts: ["1000.00", "250.00"]
    low_runway_days: 14                # optional: alert when credit lasts fewer days than this
    auto_top_up: {threshold: "250.00", amount: "2000.00", max_per_period: 2}   # optional
    grants:
      - {grant_id: g1, kind: purchased, amount: "5000.00", granted_at: 2026-10-01, priority: 10}
      - {grant_id: g2, kind: promotional, amount: "200.00", granted_at: 2026-10-01,
         expires_at: 2026-10-20, priority: 5}
```
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contracts.catalog import (
    PRICE_SCALE,
    CatalogError,
    Currency,
    Money,
    Problem,
    _expected,
    _to_datetime,
)

WALLETS_FILE = "wallets.yml"
#: Grant ids the ledger gives the grants auto top-ups book; catalog grant ids may not use it.
TOP_UP_PREFIX = "topup-"
GRANT_KINDS = ("purchased", "promotional")
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is not None:
        raise ValueError("give times in UTC without an offset")
    return value


class Grant(_Entry):
    grant_id: str = Field(pattern=_ID, description="Unique within the wallet.")
    kind: Literal[GRANT_KINDS]  # type: ignore[valid-type]
    amount: Money = Field(gt=0, description="Credit granted, in the wallet's currency.")
    granted_at: datetime = Field(description="UTC; usable from this instant (a date = midnight).")
    expires_at: datetime | None = Field(
        default=None, description="UTC; what is left at this instant expires (null: never)."
    )
    priority: int = Field(default=0, ge=0, description="Lower numbers are drawn first.")

    @field_validator("granted_at", "expires_at", mode="before")
    @classmethod
    def _dates(cls, value):
        return _to_datetime(value)

    @field_validator("granted_at", "expires_at")
    @classmethod
    def _utc(cls, value):
        return _naive_utc(value)

    @field_validator("grant_id")
    @classmethod
    def _not_reserved(cls, value: str):
        if value.startswith(TOP_UP_PREFIX):
            raise ValueError(f"grant ids starting with {TOP_UP_PREFIX!r} are reserved for top-ups")
        return value

    @model_validator(mode="after")
    def _window(self):
        if self.expires_at is not None and self.expires_at <= self.granted_at:
            raise ValueError("expires_at must be after granted_at")
        return self


class AutoTopUp(_Entry):
    threshold: Money = Field(gt=0, description="Fires when the balance falls below this.")
    amount: Money = Field(gt=0, description="Credit each top-up buys (a purchased grant).")
    max_per_period: int = Field(ge=1, description="At most this many top-ups per billing period.")
    priority: int = Field(default=0, ge=0, description="Priority of the grants it books.")


class Wallet(_Entry):
    wallet_id: str = Field(pattern=_ID)
    customer_id: str = Field(min_length=1)
    currency: Currency
    low_balance_alerts: list[Money] = Field(
        default_factory=list, description="Balance thresholds; crossing one below is an alert."
    )
    low_runway_days: int | None = Field(
        default=None,
        ge=1,
        description="Alert (low_runway) when the credit left lasts fewer days than this at the "
        "trailing burn rate (marts.fct_wallet_runway); null: no runway alert.",
    )
    auto_top_up: AutoTopUp | None = None
    allow_overage: bool = Field(
        default=True,
        description="Whether usage beyond the credit stays due on the invoice. False: a "
        "customer out of credit is listed in the enforcement file (the gateway blocks).",
    )
    grants: list[Grant] = Field(default_factory=list)

    @field_validator("low_balance_alerts")
    @classmethod
    def _positive(cls, values: list[Decimal]):
        if any(v <= 0 for v in values):
            raise ValueError("alert thresholds must be greater than 0")
        if len(set(values)) != len(values):
            raise ValueError("alert thresholds must be distinct")
        return values


#: What a field expects, for errors pydantic gives no expectation for (custom validators).
_EXPECTED = {
    "grant_id": f"an id of letters, digits, _ . : - not starting with {TOP_UP_PREFIX!r}",
    "granted_at": "a UTC date or time without offset",
    "expires_at": "null, or a UTC date or time after granted_at",
    "low_balance_alerts": "distinct amounts greater than 0",
    "low_runway_days": "a whole number of days, at least 1",
    "currency": "an ISO 4217 code such as USD, EUR or JPY",
}


def _wallet_expected(err: dict) -> str:
    expected = _expected(err)
    if expected:
        return expected
    loc = [p for p in err["loc"] if isinstance(p, str)]
    if loc and loc[-1] in _EXPECTED:
        return _EXPECTED[loc[-1]]
    if loc and loc[-1] == "grants":  # a whole grant: its window
        return "expires_at after granted_at"
    return "a value as documented in README, 'Prepaid wallets'"


def _too_precise(value: Decimal) -> bool:
    exponent = value.as_tuple().exponent
    return isinstance(exponent, int) and exponent < -PRICE_SCALE


def _label(raw: object, index: int) -> str:
    ident = raw.get("wallet_id") if isinstance(raw, dict) else None
    return f"wallets[{index}]" + (f" (wallet_id={ident})" if ident else "")


def validate_wallets(document: object, customers: dict[str, str] | None) -> list[Wallet]:
    """Validate the parsed ``wallets.yml`` against the customers (id -> currency).

    ``None`` (no file) means no wallets. ``customers`` is None when customers.yml cannot be
    read: its own problem is reported, and the wallets' customers are not judged against it.
    Raises CatalogError listing every problem."""
    if document is None:
        return []
    entries = document.get("wallets") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise CatalogError(
            [Problem(WALLETS_FILE, "-", "wallets", "missing or not a list", "a `wallets:` list")]
        )
    problems: list[Problem] = []
    wallets: list[tuple[int, Wallet]] = []
    for i, raw in enumerate(entries):
        try:
            wallets.append((i, Wallet.model_validate(raw)))
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "-"
                problems.append(
                    Problem(WALLETS_FILE, _label(raw, i), loc, err["msg"], _wallet_expected(err))
                )
    seen_ids: dict[str, int] = {}
    seen_customers: dict[str, str] = {}
    for i, w in wallets:
        label = f"wallets[{i}] (wallet_id={w.wallet_id})"

        def problem(field: str, what: str, expected: str, label=label) -> None:
            problems.append(Problem(WALLETS_FILE, label, field, what, expected))

        if w.wallet_id in seen_ids:
            problem("wallet_id", "duplicate id", "wallet ids unique within the file")
        seen_ids.setdefault(w.wallet_id, i)
        if w.customer_id in seen_customers:
            problem(
                "customer_id",
                f"customer {w.customer_id} already has wallet {seen_customers[w.customer_id]}",
                "at most one wallet per customer",
            )
        seen_customers.setdefault(w.customer_id, w.wallet_id)
        if customers is None:
            pass
        elif w.customer_id not in customers:
            problem(
                "customer_id",
                f"unknown customer {w.customer_id!r}",
                "a customer_id from customers.yml",
            )
        elif customers[w.customer_id] != w.currency:
            problem(
                "currency",
                f"wallet in {w.currency} but customer {w.customer_id} is billed in "
                f"{customers[w.customer_id]}",
                "the customer's currency",
            )
        grant_ids: set[str] = set()
        for j, g in enumerate(w.grants):
            if g.grant_id in grant_ids:
                problem(f"grants.{j}.grant_id", f"duplicate grant id {g.grant_id!r}", "unique ids")
            grant_ids.add(g.grant_id)
            if _too_precise(g.amount):
                problem(f"grants.{j}.amount", f"{g.amount}", f"at most {PRICE_SCALE} decimals")
        money = [("low_balance_alerts", v) for v in w.low_balance_alerts]
        if w.auto_top_up is not None:
            money += [
                ("auto_top_up.threshold", w.auto_top_up.threshold),
                ("auto_top_up.amount", w.auto_top_up.amount),
            ]
        for field, value in money:
            if _too_precise(value):
                problem(field, f"{value}", f"at most {PRICE_SCALE} decimals")
    if problems:
        raise CatalogError(problems)
    return [w for _, w in wallets]
