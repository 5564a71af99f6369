"""Prepaid-wallet draw-down: rated charges -> ledger entries. Pure logic, no warehouse.

A wallet holds credit *grants* (purchased or promotional, from ``catalog/wallets.yml``, plus
the purchased grants its auto top-up books). Rated usage draws them down; every movement is
one ledger entry (``billing.wallet_ledger``, exposed as ``marts.fct_wallet_ledger``).

What this module does *not* decide (one owner per rule): the billing period of an instant,
the draw order of the grants and the hourly charges are computed in SQL by the dbt model
``int_wallets__draw_inputs`` and handed in (``period_of``, ``GrantState.draw_rank``,
``TopUpRule.draw_rank``, ``charges``). Low-balance alerts are found in SQL
(``fct_billing_alerts``) from the entries written here.

Rules (exact, all times UTC, all money ``Decimal`` end to end; no floats anywhere):

- **Hourly charge.** Charges are drawn hour by hour; ``charges[h]`` is the wallet's net
  rated amount of hour ``h``.
- **Eligibility.** A grant pays hour ``[h, h+1h)`` if ``granted_at <= h`` and
  (``expires_at`` is null or ``h + 1h <= expires_at``): a grant given at 10:30 pays from the
  11:00 hour; one expiring at 10:30 pays the 09:00 hour last.
- **Draw.** A positive hour draws ``min(charge, eligible balance)``, grant by grant in
  ``draw_rank`` order (a grant is emptied before the next is touched). What credits cannot
  cover is *overage*: it stays due on the invoice and is not carried to later hours. A
  balance never goes negative.
- **Reversal.** A negative hour (a volume tier crossed, usage re-rated after late data)
  first cancels overage of its billing period (the customer owes less), then gives credit
  back, as ``reversal`` entries, to the grants the period drew on, in *reverse* draw order,
  each at most what the period drew from it. So for every wallet and period, the credit used
  (deductions - reversals) never exceeds the period's net charges and equals them whenever
  the credit eligible at each charged hour sufficed. Credit given back to a grant that has
  already expired is booked and expires at once (an ``expiry`` entry right after the
  reversal): that is what a clean run with the corrected charges would have left to expire,
  and ``granted + topped up = used + expired + balance`` stays exact.
- **Expiry.** At ``expires_at`` the grant's remainder (if any) is booked as an ``expiry``
  entry at that instant.
- **Auto top-up.** Evaluated after each hour with a positive charge, once that hour's draw is
  booked: if the wallet balance is then below ``threshold`` and fewer than ``max_per_period``
  top-ups are granted in the billing period containing ``h + 1h``, a ``top_up`` entry books
  a purchased grant of ``amount`` (never expires) granted at ``h + 1h``; it pays from the
  next hour and is billed on the invoice. Idle and negative hours never fire it.
- **Ordering within an instant.** Grants and top-ups first, then expiries, then deductions or
  reversals (a grant given at midnight pays the midnight hour). ``entry_order`` numbers the
  entries of one wallet and instant in the order they were booked, and
  ``wallet_balance_after`` is the running balance in ``(entry_ts, entry_order)`` order, the
  order SQL reads them in.

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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from contracts.wallets import TOP_UP_PREFIX

HOUR = timedelta(hours=1)
ZERO = Decimal(0)
ENTRY_TYPES = ("grant", "top_up", "expiry", "deduction", "reversal")


class PeriodCalendar:
    """``ts -> billing period start`` for one wallet, looked up in the intervals
    ``(valid_from, valid_to, billing_period_start)`` that ``int_wallets__draw_inputs``
    computes (the dbt macro ``billing_period_start`` on the customer's subscriptions owns the
    rule; this only finds the interval containing ``ts``)."""

    def __init__(self, wallet_id: str, intervals: Iterable[tuple[datetime, datetime, datetime]]):
        self.wallet_id = wallet_id
        self.intervals = sorted(intervals)
        self._starts = [i[0] for i in self.intervals]

    def __call__(self, ts: datetime) -> datetime:
        at = bisect.bisect_right(self._starts, ts) - 1
        if at < 0 or not ts < self.intervals[at][1]:
            raise ValueError(
                f"{self.wallet_id}: no billing period for {ts:%Y-%m-%d %H:%M} in "
                "int_wallets__draw_inputs: rebuild it (run the hourly job, or dbt build "
                "--select int_wallets__draw_inputs)"
            )
        return self.intervals[at][2]


@dataclass
class GrantState:
    """A grant and what is left of it. ``draw_rank`` is its place in the draw order (from
    SQL; top-ups take the wallet's top-up rank and, among themselves, the oldest first)."""

    grant_id: str
    kind: str
    amount: Decimal
    granted_at: datetime
    expires_at: datetime | None
    draw_rank: int
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
        return (self.draw_rank, self.granted_at, self.grant_id)


@dataclass(frozen=True)
class TopUpRule:
    threshold: Decimal
    amount: Decimal
    max_per_period: int
    draw_rank: int  # where its top-ups draw (from SQL)


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
    entry_order: int
    usage_hour: datetime | None
    billing_period_start: datetime
    amount: Decimal
    grant_remaining_after: Decimal
    wallet_balance_after: Decimal

    @property
    def entry_id(self) -> str:
        """Stable and deterministic: the wallet, the instant and the place in it (type and
        grant for the reader)."""
        return (
            f"{self.wallet_id}|{self.entry_type}|{self.grant_id}|"
            f"{self.entry_ts:%Y-%m-%dT%H:%M:%S}|{self.entry_order}"
        )

    def row(self) -> dict:
        return {"entry_id": self.entry_id, **self.__dict__}


@dataclass
class PeriodState:
    """What a billing period has drawn so far: net credit used per grant, and the overage
    (charges credits did not cover) a negative hour cancels before it gives credit back."""

    used: dict[str, Decimal] = field(default_factory=dict)
    overage: Decimal = ZERO


@dataclass
class WindowResult:
    entries: list[LedgerEntry]
    overage: dict[datetime, Decimal]  # hour -> charge credits did not cover (negative: cancelled)
    charged: dict[datetime, Decimal]  # hour -> net hourly charge
    grants: list[GrantState]
    balance: Decimal
    top_ups_by_period: dict[datetime, int]

    def _sum(self, entry_type: str) -> Decimal:
        return sum((e.amount for e in self.entries if e.entry_type == entry_type), ZERO)

    @property
    def deducted(self) -> Decimal:
        return -self._sum("deduction")

    @property
    def reversed(self) -> Decimal:
        return self._sum("reversal")

    @property
    def credits_used(self) -> Decimal:
        """Net credit used: deductions less reversals."""
        return self.deducted - self.reversed


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
    periods: Mapping[datetime, PeriodState] | None = None,
) -> WindowResult:
    """Book the entries of ``[start, end)`` (hour-aligned) for one wallet.

    ``grants`` is the state at ``start``: grants already booked with their remainder, and
    catalog grants not yet granted (``booked=False``, granted in or after the window).
    ``balance`` is the wallet balance at ``start``; ``top_ups_by_period`` counts top-ups
    already granted per billing period; ``previous_hour_balance`` is the balance after the
    draw of hour ``start - 1h`` if that hour had a positive charge (its top-up, granted at
    ``start``, belongs to this window); ``periods`` is what the billing periods open at
    ``start`` drew before it. The grant states are updated in place.
    """
    grants = list(grants)
    by_id = {g.grant_id: g for g in grants}
    counts: dict[datetime, int] = dict(top_ups_by_period or {})
    period_states: dict[datetime, PeriodState] = {
        p: PeriodState(dict(s.used), s.overage) for p, s in (periods or {}).items()
    }
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
        order = entries[-1].entry_order + 1 if entries and entries[-1].entry_ts == ts else 0
        entries.append(
            LedgerEntry(
                wallet_id=wallet.wallet_id,
                customer_id=wallet.customer_id,
                currency=wallet.currency,
                grant_id=g.grant_id,
                grant_kind=g.kind,
                entry_type=entry_type,
                entry_ts=ts,
                entry_order=order,
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
            draw_rank=rule.draw_rank,
            is_top_up=True,
        )
        grants.append(g)
        by_id[g.grant_id] = g
        bisect.insort(events, (at, 0, g.grant_id, "grant", g), key=lambda e: e[:3])

    def draw(hour: datetime, charge: Decimal, period: PeriodState) -> None:
        need = charge
        eligible = sorted(
            (g for g in grants if g.booked and not g.expired and g.remaining > 0 and g.pays(hour)),
            key=lambda g: g.draw_key,
        )
        for g in eligible:
            if need <= 0:
                break
            take = min(need, g.remaining)
            g.remaining -= take
            need -= take
            period.used[g.grant_id] = period.used.get(g.grant_id, ZERO) + take
            book(g, "deduction", hour, -take, usage_hour=hour)
        if need > 0:
            overage[hour] = need
            period.overage += need
        maybe_top_up(hour, state["balance"])

    def give_back(hour: datetime, credit: Decimal, period: PeriodState) -> None:
        cancelled = min(credit, max(period.overage, ZERO))
        credit -= cancelled
        drawn = sorted(
            (by_id[grant_id] for grant_id, used in period.used.items() if used > 0),
            key=lambda g: g.draw_key,
            reverse=True,
        )
        for g in drawn:
            if credit <= 0:
                break
            back = min(credit, period.used[g.grant_id])
            period.used[g.grant_id] -= back
            credit -= back
            g.remaining += back
            book(g, "reversal", hour, back, usage_hour=hour)
            if g.expired:  # given back after its expiry: it expires at once
                g.remaining -= back
                book(g, "expiry", hour, -back)
        # A period's net charges are never negative (each price's period amount is >= 0), so
        # ``credit`` is 0 here; if it were not, it stays visible as negative overage.
        period.overage -= cancelled + credit
        if cancelled + credit:
            overage[hour] = -(cancelled + credit)

    if previous_hour_balance is not None:
        maybe_top_up(start - HOUR, previous_hour_balance)

    hour = start
    while hour < end:
        flush(hour, inclusive=True)
        charge = charges.get(hour, ZERO)
        if charge:
            charged[hour] = charge
            period = period_states.setdefault(period_of(hour), PeriodState())
            if charge > 0:
                draw(hour, charge, period)
            else:
                give_back(hour, -charge, period)
        hour += HOUR
    flush(end, inclusive=False)
    return WindowResult(entries, overage, charged, grants, state["balance"], counts)
