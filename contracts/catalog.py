"""The pricing-catalog contract: customers, plans, subscriptions, prices and overrides.

Operators edit the catalog as YAML files in a directory (reviewed in pull requests); this
module defines what each entry must look like (pydantic models, one per entry kind) and the
rules that span entries (references, currencies, overlapping versions, ambiguous selectors).
:func:`validate_catalog` returns every problem found, each naming the file, the entry, the
field, what is wrong and what is expected, so a broken catalog is fixed in one pass.

Amounts are strings or numbers parsed as exact ``Decimal`` (floats in YAML are read through
their text, never through binary floating point).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

#: ISO 4217 minor-unit exponents of the currencies the catalog accepts.
CURRENCY_EXPONENTS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2, "SEK": 2, "NOK": 2,
    "DKK": 2, "PLN": 2, "CZK": 2, "INR": 2, "BRL": 2, "MXN": 2, "SGD": 2, "HKD": 2, "CNY": 2,
    "ZAR": 2, "ILS": 2, "TRY": 2, "JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0,
    "KWD": 3, "BHD": 3, "JOD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip

#: What a price can meter. Token meters partition a call's tokens (uncached + cached + cache
#: write = input; output includes reasoning); ``reasoning`` is an optional surcharge on the
#: reasoning subset and ``requests`` counts attempts.
METERS = (
    "uncached_input",
    "cached_input",
    "cache_write",
    "output",
    "reasoning",
    "requests",
    # Optional surcharges on subsets of the token meters above (issue #14): cache writes by
    # TTL (subsets of cache_write), audio and image tokens (subsets of the input and output
    # meters). Like reasoning, the tokens are already metered by their parent.
    "cache_write_5m",
    "cache_write_1h",
    "audio_input",
    "image_input",
    "audio_output",
    "image_output",
)
#: Meters whose usage must be priced: usage of them that no price matches is unpriced usage.
REQUIRED_METERS = ("uncached_input", "cached_input", "cache_write", "output")
PRICING_MODELS = ("per_unit", "package", "volume", "graduated")
#: Unit sizes a price may be quoted per; all powers of ten, so per-token prices stay exact.
UNITS = {"1": 1, "1K": 1_000, "1M": 1_000_000, "1B": 1_000_000_000}
#: Prices are stored per token with this many decimals (enough for 1e-9/token at 1B units).
PRICE_SCALE = 18


def _to_datetime(value):
    """Dates in the catalog are UTC; a bare date means its midnight."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    return value


def _decimal(value):
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int | str):
        try:
            return Decimal(str(value).strip())
        except ArithmeticError as exc:
            raise ValueError(f"not a decimal number: {value!r}") from exc
    return value


Money = Annotated[Decimal, BeforeValidator(_decimal)]


def _currency(value):
    if value not in CURRENCY_EXPONENTS:
        raise ValueError(
            f"unknown currency {value!r}: expected an ISO 4217 code such as USD, EUR or JPY"
        )
    return value


Currency = Annotated[str, BeforeValidator(_currency)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Entry):
    up_to: int | None = Field(
        description="Inclusive upper bound in units (null for the last, unbounded tier)."
    )
    unit_price: Money = Field(ge=0)
    flat_fee: Money = Field(default=Decimal(0), ge=0)


class PriceVersion(_Entry):
    effective_from: datetime
    effective_to: datetime | None = None
    unit_price: Money | None = Field(default=None, ge=0)
    package_price: Money | None = Field(default=None, ge=0)
    tiers: list[Tier] | None = None

    @field_validator("effective_from", "effective_to", mode="before")
    @classmethod
    def _dates(cls, value):
        return _to_datetime(value)

    @model_validator(mode="after")
    def _window(self):
        if self.effective_to is not None and self.effective_to <= self.effective_from:
            raise ValueError("effective_to must be after effective_from (half-open, UTC)")
        if self.effective_from.tzinfo is not None or (
            self.effective_to is not None and self.effective_to.tzinfo is not None
        ):
            raise ValueError("give effective dates in UTC without an offset")
        return self


class Selector(_Entry):
    model: str = Field(
        min_length=1,
        description="Exact model name, or a pattern with * (e.g. claude-sonnet-4*).",
    )
    provider: str | None = None
    feature: str | None = None
    environment: str | None = None

    @property
    def is_pattern(self) -> bool:
        return "*" in self.model

    @property
    def specificity(self) -> int:
        """Higher wins: an exact model beats a pattern, each extra field adds, and a longer
        literal part of a pattern beats a shorter one."""
        dims = sum(v is not None for v in (self.provider, self.feature, self.environment))
        literal = len(self.model.replace("*", ""))
        return (1000 if not self.is_pattern else min(literal, 99)) + 100 * dims


class Price(_Entry):
    price_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    meter: Literal[METERS]  # type: ignore[valid-type]
    selector: Selector
    pricing: Literal[PRICING_MODELS] = "per_unit"  # type: ignore[valid-type]
    unit: Literal[tuple(UNITS)] = "1"  # type: ignore[valid-type]
    included: int = Field(default=0, ge=0, description="Free units per billing period.")
    package_size: int | None = Field(default=None, gt=0, description="Units per package.")
    package_rounding: Literal["up", "down"] = "up"
    description: str | None = None
    versions: list[PriceVersion] = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self):
        for i, v in enumerate(self.versions):
            where = f"versions[{i}]"
            if self.pricing == "per_unit" and (v.unit_price is None or v.tiers or v.package_price):
                raise ValueError(f"{where}: a per_unit price needs unit_price (and no tiers)")
            if self.pricing == "package" and (v.package_price is None or v.tiers or v.unit_price):
                raise ValueError(f"{where}: a package price needs package_price (and no tiers)")
            if self.pricing in ("volume", "graduated"):
                if not v.tiers or v.unit_price is not None or v.package_price is not None:
                    raise ValueError(f"{where}: a {self.pricing} price needs tiers")
                bounds = [t.up_to for t in v.tiers]
                if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
                    raise ValueError(f"{where}: only the last tier is unbounded (up_to: null)")
                finite = bounds[:-1]
                if any(b <= 0 for b in finite) or finite != sorted(set(finite)):
                    raise ValueError(f"{where}: tier up_to bounds must increase strictly from > 0")
        if self.pricing == "package" and self.package_size is None:
            raise ValueError("a package price needs package_size")
        if self.pricing != "package" and self.package_size is not None:
            raise ValueError("package_size is only for package prices")
        return self


class Plan(_Entry):
    plan_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    name: str
    currency: Currency
    bill_failed_attempts: bool = Field(
        default=True,
        description="Bill failed, retried and cancelled attempts that consumed tokens "
        "(the provider charged for them).",
    )
    platform_fee: Money = Field(default=Decimal(0), ge=0, description="Per billing period.")
    minimum_spend: Money = Field(default=Decimal(0), ge=0, description="Per billing period.")
    prices: list[Price] = Field(default_factory=list)


class Customer(_Entry):
    customer_id: str = Field(min_length=1)
    name: str
    currency: Currency
    stripe_customer_id: str | None = Field(
        default=None,
        pattern=r"^cus_[A-Za-z0-9]+$",
        description="The customer's id at the payment provider (Stripe's cus_...), sent as "
        "`customer` in the invoice export.",
    )


class Subscription(_Entry):
    subscription_id: str = Field(min_length=1)
    customer_id: str
    plan_id: str
    start: datetime
    end: datetime | None = None
    billing_anchor_day: int = Field(default=1, ge=1, le=28)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _dates(cls, value):
        return _to_datetime(value)

    @model_validator(mode="after")
    def _window(self):
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Override(_Entry):
    customer_id: str
    prices: list[Price] = Field(min_length=1)


#: file name -> (top-level key, entry model)
FILES = {
    "customers.yml": ("customers", Customer),
    "plans.yml": ("plans", Plan),
    "subscriptions.yml": ("subscriptions", Subscription),
    "overrides.yml": ("overrides", Override),
}


@dataclass(frozen=True)
class Problem:
    file: str
    entry: str
    field: str
    what: str
    expected: str = ""
    #: Where in the file (1-based), for problems found while parsing it (YAML syntax): then
    #: the problem reads ``file:line:column: what``, as compilers and editors expect.
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        tail = f" (expected: {self.expected})" if self.expected else ""
        if self.line is not None:
            return f"{self.file}:{self.line}:{self.column}: {self.what}{tail}"
        return f"{self.file}: {self.entry}: {self.field}: {self.what}{tail}"


class CatalogError(Exception):
    """The catalog breaks its contract; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"the catalog has {len(problems)} problem(s); nothing was applied:\n{lines}"
        )


@dataclass(frozen=True)
class Catalog:
    customers: list[Customer]
    plans: list[Plan]
    subscriptions: list[Subscription]
    overrides: list[Override]


def entry_label(kind: str, raw: object, index: int) -> str:
    key = {
        "customers": "customer_id",
        "plans": "plan_id",
        "subscriptions": "subscription_id",
        "overrides": "customer_id",
    }[kind]
    ident = raw.get(key) if isinstance(raw, dict) else None
    return f"{kind}[{index}]" + (f" ({key}={ident})" if ident else "")


def validate_catalog(
    documents: dict[str, object], unreadable: frozenset[str] = frozenset()
) -> Catalog:
    """Validate parsed YAML documents (file name -> content); raise CatalogError listing all.

    ``unreadable`` names files that could not be parsed (their syntax error is reported by the
    reader): nothing more is said about them, and references into them (a subscription's
    customer when customers.yml is unreadable) are not judged, so one typo is one problem."""
    from pydantic import ValidationError

    problems: list[Problem] = []
    parsed: dict[str, list] = {}
    for file, (key, model) in FILES.items():
        if file in unreadable:
            parsed[key] = []
            continue
        doc = documents.get(file)
        entries = doc.get(key) if isinstance(doc, dict) else None
        if doc is None and file == "overrides.yml":
            entries = []
        if not isinstance(entries, list):
            problems.append(
                Problem(file, "-", key, "missing or not a list", f"a top-level `{key}:` list")
            )
            parsed[key] = []
            continue
        good = []
        for i, raw in enumerate(entries):
            try:
                good.append(model.model_validate(raw))
            except ValidationError as exc:
                label = entry_label(key, raw, i)
                for err in exc.errors():
                    loc = ".".join(str(p) for p in err["loc"]) or "-"
                    problems.append(Problem(file, label, loc, err["msg"], _expected(err)))
        parsed[key] = good
    catalog = Catalog(**parsed)
    # Ids of entries that failed validation still count as known: a broken plan is reported
    # once, not again by every subscription that names it.
    # An unreadable file's ids are unknown (None): references into it are not judged.
    known = {
        key: None if file in unreadable else
             {e.get(ident) for e in _entries(documents.get(file), key) if isinstance(e, dict)}
        for file, (key, ident) in {"customers.yml": ("customers", "customer_id"),
                                   "plans.yml": ("plans", "plan_id")}.items()
    }  # fmt: skip
    problems += _cross_checks(catalog, known)
    if problems:
        raise CatalogError(problems)
    return catalog


def _entries(document: object, key: str) -> list:
    entries = document.get(key) if isinstance(document, dict) else None
    return entries if isinstance(entries, list) else []


def _expected(err: dict) -> str:
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        return str(ctx["expected"])
    if err["type"] == "extra_forbidden":
        return "only the documented fields (see README, 'The catalog')"
    if err["type"] == "missing":
        return "this field"
    return ""


def _cross_checks(c: Catalog, known: dict[str, set | None]) -> list[Problem]:
    problems: list[Problem] = []
    customers = {x.customer_id: x for x in c.customers}
    plans = {x.plan_id: x for x in c.plans}

    def dupes(items, key, file, kind):
        seen: set = set()
        for i, item in enumerate(items):
            ident = getattr(item, key)
            if ident in seen:
                problems.append(
                    Problem(
                        file,
                        f"{kind}[{i}] ({key}={ident})",
                        key,
                        "duplicate id",
                        "ids unique within the file",
                    )
                )
            seen.add(ident)

    dupes(c.customers, "customer_id", "customers.yml", "customers")
    dupes(c.plans, "plan_id", "plans.yml", "plans")
    dupes(c.subscriptions, "subscription_id", "subscriptions.yml", "subscriptions")
    dupes(c.overrides, "customer_id", "overrides.yml", "overrides")

    for i, p in enumerate(c.plans):
        label = f"plans[{i}] (plan_id={p.plan_id})"
        problems += _price_problems("plans.yml", label, p.prices)
    for i, s in enumerate(c.subscriptions):
        label = f"subscriptions[{i}] (subscription_id={s.subscription_id})"
        customer, plan = customers.get(s.customer_id), plans.get(s.plan_id)
        if customer is None and not _known(s.customer_id, known["customers"]):
            problems.append(
                Problem(
                    "subscriptions.yml",
                    label,
                    "customer_id",
                    f"unknown customer {s.customer_id!r}",
                    "a customer_id from customers.yml",
                )
            )
        if plan is None and not _known(s.plan_id, known["plans"]):
            problems.append(
                Problem(
                    "subscriptions.yml",
                    label,
                    "plan_id",
                    f"unknown plan {s.plan_id!r}",
                    "a plan_id from plans.yml",
                )
            )
        if customer and plan and customer.currency != plan.currency:
            problems.append(
                Problem(
                    "subscriptions.yml",
                    label,
                    "plan_id",
                    f"plan {plan.plan_id} bills in {plan.currency} but customer "
                    f"{customer.customer_id} in {customer.currency}",
                    "a plan in the customer's currency",
                )
            )
    by_customer: dict[str, list[tuple[int, Subscription]]] = {}
    for i, s in enumerate(c.subscriptions):
        by_customer.setdefault(s.customer_id, []).append((i, s))
    for subs in by_customer.values():
        for a in range(len(subs)):
            for b in range(a + 1, len(subs)):
                (i, s1), (j, s2) = subs[a], subs[b]
                if _overlap(s1.start, s1.end, s2.start, s2.end):
                    problems.append(
                        Problem(
                            "subscriptions.yml",
                            f"subscriptions[{j}] (subscription_id={s2.subscription_id})",
                            "start",
                            f"overlaps {s1.subscription_id} of the same customer",
                            "one active subscription per customer at a time",
                        )
                    )
    for i, o in enumerate(c.overrides):
        label = f"overrides[{i}] (customer_id={o.customer_id})"
        if o.customer_id not in customers and not _known(o.customer_id, known["customers"]):
            problems.append(
                Problem(
                    "overrides.yml",
                    label,
                    "customer_id",
                    f"unknown customer {o.customer_id!r}",
                    "a customer_id from customers.yml",
                )
            )
        problems += _price_problems("overrides.yml", label, o.prices)

    all_ids: dict[str, str] = {}
    for file, owner, prices in [
        *(("plans.yml", f"plan {p.plan_id}", p.prices) for p in c.plans),
        *(("overrides.yml", f"override of {o.customer_id}", o.prices) for o in c.overrides),
    ]:
        for price in prices:
            if price.price_id in all_ids:
                problems.append(
                    Problem(
                        file,
                        owner,
                        f"prices ({price.price_id})",
                        f"price_id also used by {all_ids[price.price_id]}",
                        "price ids unique across the catalog",
                    )
                )
            all_ids.setdefault(price.price_id, owner)
    return problems


def _known(ident: str, known: set | None) -> bool:
    """Whether an id is known; every id is when its file could not be read (None)."""
    return known is None or ident in known


def _overlap(a0, a1, b0, b1) -> bool:
    far = datetime.max
    return a0 < (b1 or far) and b0 < (a1 or far)


def _price_problems(file: str, owner: str, prices: list[Price]) -> list[Problem]:
    problems = []
    for price in prices:
        versions = sorted(price.versions, key=lambda v: v.effective_from)
        for prev, nxt in zip(versions, versions[1:], strict=False):
            if prev.effective_to is not None and prev.effective_to > nxt.effective_from:
                problems.append(
                    Problem(
                        file,
                        owner,
                        f"prices ({price.price_id}).versions",
                        f"version from {nxt.effective_from:%Y-%m-%d} overlaps the "
                        f"one ending {prev.effective_to:%Y-%m-%d}",
                        "versions that do not overlap",
                    )
                )
            if prev.effective_from == nxt.effective_from:
                problems.append(
                    Problem(
                        file,
                        owner,
                        f"prices ({price.price_id}).versions",
                        "two versions start at the same time",
                        "one version per effective_from",
                    )
                )
    seen: dict[tuple, str] = {}
    for price in prices:
        s = price.selector
        key = (price.meter, s.model, s.provider, s.feature, s.environment)
        if key in seen:
            problems.append(
                Problem(
                    file,
                    owner,
                    f"prices ({price.price_id}).selector",
                    f"ambiguous: same meter and selector as {seen[key]}",
                    "one price per meter and selector (make one more specific, or version it)",
                )
            )
        seen.setdefault(key, price.price_id)
    return problems


def like_pattern(model: str) -> str:
    """The selector's model as a SQL LIKE pattern (``*`` matches anything)."""
    escaped = re.sub(r"([%_\\])", r"\\\1", model)
    return escaped.replace("*", "%")
