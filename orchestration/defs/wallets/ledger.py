"""Prepaid-wallet draw-down: rated charges -> ledger entries. Pure logic, no warehouse.

A wallet holds credit *grants* (purchased or promotional, from ``catalog/wallets.yml``, plus
the purchased grants its auto top-up books). Rated usage draws them down; every movement is
one ledger entry (``billing.wallet_ledger``, exposed as ``marts.fct_wallet_ledger``).

Rules (exact, all times UTC, all money ``Decimal`` end to end; no floats anywhere):

- **Hourly charge.** Charges are drawn hour by hour. The charge of hour ``h`` is the sum of
  ``amount`` over the customer's rows of ``marts.fct_rated_charges_hourly`` with
  ``usage_hour = h`` in the wallet's currency. A zero or negative hourly sum (a volume-tier
  correction) draws nothing and credits nothing back.
- **Eligibility.** A grant pays hour ``[h, h+1h)`` if ``granted_at <= h`` and
  (``expires_at`` is null or ``h + 1h <= expires_at``): a grant given at 10:30 pays from the
  11:00 hour; one expiring at 10:30 pays the 09:00 hour last.
- **Order.** Eligible grants are drawn one after the other: lower ``priority`` first, then
  earliest ``expires_at`` (no expiry last), then promotional before purchased, then oldest
  ``granted_at``, then ``grant_id``.
- **Draw.** The hour draws ``min(charge, eligible balance)``, grant by grant in that order
  (a grant is emptied before the next is touched). What credits cannot cover is *overage*:
  it stays due on the invoice and is not carried to later hours. A balance never goes
  negative.
- **Expiry.** At ``expires_at`` the grant's remainder (if any) is booked as an ``expiry``
  entry at that instant.
- **Auto top-up.** Evaluated after each hour with a positive charge, once that hour's draw is
  booked: if the wallet balance is then below ``threshold`` and fewer than ``max_per_period``
  top-ups are granted in the billing period containing ``h + 1h``, a ``top_up`` entry books
  a purchased grant of ``amount`` (priority of the rule, default 0, never expires) granted at
  ``h + 1h``; it pays from the next hour and is billed on the invoice. Idle hours (no positive
  charge) never fire it.
- **Ordering within an instant.** Grants and top-ups first, then expiries, then deductions
  (a grant given at midnight pays the midnight hour); ties by grant id, deductions in draw
  order. ``wallet_balance_after`` is the running balance in that order.
- **Billing period.** Every entry carries the customer's billing period containing its
  ``entry_ts``: the subscription active at that instant and its ``billing_anchor_day``
  (the rating's rule), the calendar month when none is active.

Why Python and not SQL: the draw-down is a sequential allocation with state. Each hour's
draw depends on what every earlier hour left in each grant, a top-up fired by one hour changes
what the following hours can draw, and the per-period top-up cap depends on earlier firings.
In SQL that is a recursive CTE carrying a vector of grant balances per row, which DuckDB
evaluates row by row anyway and which is hard to read, test and keep exact. The loop here runs
once per wallet-hour (744 iterations per wallet per month, not one per event) over exact
``Decimal`` values, is unit-tested without a warehouse, and its output is a plain table that
SQL (dbt) aggregates from there on.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from contracts.wallets import TOP_UP_PREFIX

HOUR = timedelta(hours=1)
ZERO = Decimal(0)
ENTRY_TYPES = ("grant", "top_up", "expiry", "deduction")
#: Order of entries at the same instant.
_AT_SAME_TS = {"grant": 0, "top_up": 0, "expiry": 1, "deduction": 2}


def billing_period_start(ts: datetime, anchor_day: int = 1) -> datetime:
    """Start of the monthly billing period containing ``ts`` anchored on ``anchor_day``
    (1 = calendar month); the same rule as the dbt macro ``billing_period_start``."""
    first = ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    anchor = first + timedelta(days=anchor_day - 1)
    if ts >= anchor:
        return anchor
    previous_first = (first - timedelta(days=1)).replace(day=1)
    return previous_first + timedelta(days=anchor_day - 1)


@dataclass(frozen=True)
class SubscriptionPeriod:
    """A subscription window of the customer and its anchor day (half-open, UTC)."""

    starts_at: datetime
    ends_at: datetime | None
    anchor_day: int = 1


def period_function(subscriptions: Iterable[SubscriptionPeriod]) -> Callable[[datetime], datetime]:
    """``ts -> billing period start`` for one customer: the anchor of the subscription active
    at ``ts``, the calendar month when none is."""
    subs = sorted(subscriptions, key=lambda s: s.starts_at)

    def period_of(ts: datetime) -> datetime:
        for s in subs:
            if s.starts_at <= ts and (s.ends_at is None or ts < s.ends_at):
                return billing_period_start(ts, s.anchor_day)
        return billing_period_start(ts, 1)

    return period_of


@dataclass
class GrantState:
    """A grant and what is left of it."""

    grant_id: str
    kind: str
    amount: Decimal
    granted_at: datetime
    expires_at: datetime | None
    priority: int
    remaining: Decimal | None = None
    booked: bool = False  # its grant / top_up entry is in the ledger
    expired: bool = False  # its expiry has been processed
    is_top_up: bool = False

    def __post_init__(self) -> None:
        if self.remaining is None:
            self.remaining = self.amount

    def pays(self, hour: datetime) -> bool:
        return self.granted_at <= hour and (
            self.expires_at is None or hour + HOUR <= self.expires_at
        )

    @property
    def draw_key(self) -> tuple:
        return (
            self.priority,
            self.expires_at is None,
            self.expires_at or datetime.max,
            self.kind != "promotional",
            self.granted_at,
            self.grant_id,
        )


@dataclass(frozen=True)
class TopUpRule:
    threshold: Decimal
    amount: Decimal
    max_per_period: int
    priority: int = 0


@dataclass(frozen=True)
class WalletSpec:
    wallet_id: str
    customer_id: str
    currency: str
    auto_top_up: TopUpRule | None = None


@dataclass(frozen=True)
class LedgerEntry:
    wallet_id: str
    customer_id: str
    currency: str
    grant_id: str
    grant_kind: str
    entry_type: str
    entry_ts: datetime
    usage_hour: datetime | None
    billing_period_start: datetime
    amount: Decimal
    grant_remaining_after: Decimal
    wallet_balance_after: Decimal

    @property
    def entry_id(self) -> str:
        """Stable and deterministic: one entry per wallet, type, grant and instant."""
        return (
            f"{self.wallet_id}|{self.entry_type}|{self.grant_id}|{self.entry_ts:%Y-%m-%dT%H:%M:%S}"
        )

    def row(self) -> dict:
        return {"entry_id": self.entry_id, **self.__dict__}


@dataclass
class WindowResult:
    entries: list[LedgerEntry]
    overage: dict[datetime, Decimal]  # hour -> charge credits could not cover
    charged: dict[datetime, Decimal]  # hour -> positive hourly charge
    grants: list[GrantState]
    balance: Decimal
    top_ups_by_period: dict[datetime, int]

    @property
    def deducted(self) -> Decimal:
        return -sum((e.amount for e in self.entries if e.entry_type == "deduction"), ZERO)


def top_up_grant_id(granted_at: datetime) -> str:
    return f"{TOP_UP_PREFIX}{granted_at:%Y%m%dT%H%M}"


def simulate(
    wallet: WalletSpec,
    grants: list[GrantState],
    charges: Mapping[datetime, Decimal],
    start: datetime,
    end: datetime,
    period_of: Callable[[datetime], datetime],
    *,
    balance: Decimal = ZERO,
    top_ups_by_period: Mapping[datetime, int] | None = None,
    previous_hour_balance: Decimal | None = None,
) -> WindowResult:
    """Book the entries of ``[start, end)`` (hour-aligned) for one wallet.

    ``grants`` is the state at ``start``: grants already booked with their remainder, and
    catalog grants not yet granted (``booked=False``, granted in or after the window).
    ``balance`` is the wallet balance at ``start``; ``top_ups_by_period`` counts top-ups
    already granted per billing period; ``previous_hour_balance`` is the balance after the
    draw of hour ``start - 1h`` if that hour had a positive charge (its top-up, granted at
    ``start``, belongs to this window). The grant states are updated in place.
    """
    grants = list(grants)
    counts: dict[datetime, int] = dict(top_ups_by_period or {})
    entries: list[LedgerEntry] = []
    overage: dict[datetime, Decimal] = {}
    charged: dict[datetime, Decimal] = {}
    state = {"balance": balance}
    # (ts, order, grant_id, action, grant): grants, top-ups and expiries still to process.
    events: list[tuple] = []

    for g in grants:
        if not g.booked:
            if g.granted_at < start:
                raise ValueError(
                    f"{wallet.wallet_id}: grant {g.grant_id} was granted before {start} but has "
                    "no grant entry: book the earlier months first"
                )
            if g.granted_at < end:
                events.append((g.granted_at, 0, g.grant_id, "grant", g))
        if not g.expired and g.expires_at is not None and g.expires_at < end:
            if g.expires_at < start:
                raise ValueError(
                    f"{wallet.wallet_id}: grant {g.grant_id} expired before {start} but its "
                    "expiry is not booked: book the earlier months first"
                )
            events.append((g.expires_at, 1, g.grant_id, "expiry", g))
    events.sort(key=lambda e: e[:3])

    def book(g: GrantState, entry_type: str, ts: datetime, amount: Decimal, usage_hour=None):
        state["balance"] += amount
        entries.append(
            LedgerEntry(
                wallet_id=wallet.wallet_id,
                customer_id=wallet.customer_id,
                currency=wallet.currency,
                grant_id=g.grant_id,
                grant_kind=g.kind,
                entry_type=entry_type,
                entry_ts=ts,
                usage_hour=usage_hour,
                billing_period_start=period_of(ts),
                amount=amount,
                grant_remaining_after=g.remaining,
                wallet_balance_after=state["balance"],
            )
        )

    def process(ts: datetime, action: str, g: GrantState) -> None:
        if action == "expiry":
            g.expired = True
            left, g.remaining = g.remaining, ZERO
            if left > 0:
                book(g, "expiry", ts, -left)
        else:
            g.booked = True
            book(g, "top_up" if g.is_top_up else "grant", ts, g.amount)

    def flush(until: datetime, inclusive: bool) -> None:
        while events and (events[0][0] <= until if inclusive else events[0][0] < until):
            ts, _, _, action, g = events.pop(0)
            process(ts, action, g)

    def maybe_top_up(hour: datetime, balance_after: Decimal) -> None:
        rule = wallet.auto_top_up
        if rule is None or balance_after >= rule.threshold:
            return
        at = hour + HOUR
        if at >= end:
            return  # granted in the next window, which decides it (previous_hour_balance)
        period = period_of(at)
        if counts.get(period, 0) >= rule.max_per_period:
            return
        counts[period] = counts.get(period, 0) + 1
        g = GrantState(
            grant_id=top_up_grant_id(at),
            kind="purchased",
            amount=rule.amount,
            granted_at=at,
            expires_at=None,
            priority=rule.priority,
            is_top_up=True,
        )
        grants.append(g)
        bisect.insort(events, (at, 0, g.grant_id, "grant", g), key=lambda e: e[:3])

    if previous_hour_balance is not None:
        maybe_top_up(start - HOUR, previous_hour_balance)

    hour = start
    while hour < end:
        flush(hour, inclusive=True)
        charge = charges.get(hour, ZERO)
        if charge > 0:
            charged[hour] = charge
            need = charge
            eligible = sorted(
                (
                    g
                    for g in grants
                    if g.booked and not g.expired and g.remaining > 0 and g.pays(hour)
                ),
                key=lambda g: g.draw_key,
            )
            for g in eligible:
                if need <= 0:
                    break
                take = min(need, g.remaining)
                g.remaining -= take
                need -= take
                book(g, "deduction", hour, -take, usage_hour=hour)
            if need > 0:
                overage[hour] = need
            maybe_top_up(hour, state["balance"])
        hour += HOUR
    flush(end, inclusive=False)
    return WindowResult(entries, overage, charged, grants, state["balance"], counts)


def ledger_order_key(entry: LedgerEntry) -> tuple:
    """The order entries are booked in (also reproducible in SQL: within an instant, positive
    amounts by rising balance, then negative ones by falling balance)."""
    return (entry.wallet_id, entry.entry_ts, _AT_SAME_TS[entry.entry_type])


def low_balance_crossings(
    entries: Iterable[LedgerEntry], thresholds: Iterable[Decimal], opening_balance: Decimal
) -> list[tuple[Decimal, LedgerEntry]]:
    """(threshold, entry) for each entry that takes the balance from >= threshold to below
    it. After the balance is lifted back above a threshold, a new crossing counts again."""
    thresholds = sorted(thresholds, reverse=True)
    crossings = []
    before = opening_balance
    for e in entries:
        for t in thresholds:
            if before >= t > e.wallet_balance_after:
                crossings.append((t, e))
        before = e.wallet_balance_after
    return crossings
