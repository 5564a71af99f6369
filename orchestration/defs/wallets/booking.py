"""Booking a month of the wallet ledger: read its inputs and the state earlier months left,
draw the month down with :mod:`orchestration.defs.wallets.ledger`, replace its entries.

Its inputs are the dbt view ``marts.int_wallets__draw_inputs`` and nothing else (charges with
their billing period, grants in draw order, top-up rules, the billing-period calendar), plus
the state the earlier months left in the ledger itself (each grant's remainder, top-ups already
used in the billing period, what the open billing period drew from each grant). So months are
booked in order; re-running a month gives identical rows, and later months then need
re-running too (their opening state may have changed).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

import polars as pl

from orchestration.defs.wallets.ledger import (
    HOUR,
    ZERO,
    GrantState,
    LedgerEntry,
    PeriodCalendar,
    PeriodState,
    TopUpRule,
    WalletSpec,
    simulate,
)
from orchestration.defs.wallets.ledger_table import INPUTS, LEDGER_COLUMNS, LEDGER_SCHEMA
from orchestration.warehouse import as_tables

#: A billing period is at most 31 days: the open period at a month's start began within this.
PERIOD_REACH = timedelta(days=32)


class LedgerInputError(Exception):
    """The warehouse cannot be booked as is (catalog not loaded, months out of order...)."""


def months_of(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The calendar months of ``[start, end)``, as half-open ``(start, end)`` pairs."""
    months, cursor = [], start
    while cursor < end:
        nxt = (cursor.replace(day=1) + (HOUR * 24 * 32)).replace(day=1)
        months.append((cursor, min(nxt, end)))
        cursor = nxt
    return months


def _read_inputs(con, start: datetime, end: datetime) -> dict:
    """The rows of ``int_wallets__draw_inputs`` a month needs: wallets, grants, the charges of
    the billing periods open in it, and the calendar around it."""
    con = as_tables(con)
    if not con.relation_exists("marts", "int_wallets__draw_inputs"):
        raise LedgerInputError(
            f"{INPUTS} is missing: run catalog_job, then the hourly job (its dbt build "
            "creates the view) before booking wallets"
        )
    wallets = {}
    for wallet_id, customer_id, currency, amount, threshold, max_per, rank in con.rows(
        f"select wallet_id, customer_id, currency, amount, threshold, max_per_period, "
        f"draw_rank from {INPUTS} where input_type = 'wallet' order by wallet_id"
    ):
        rule = TopUpRule(threshold, amount, max_per, rank) if threshold is not None else None
        wallets[wallet_id] = (WalletSpec(wallet_id, customer_id, currency, rule), rank)
    grants = defaultdict(list)
    for wallet_id, grant_id, kind, amount, granted_at, expires_at, rank in con.rows(
        f"select wallet_id, grant_id, grant_kind, amount, valid_from, valid_to, draw_rank "
        f"from {INPUTS} where input_type = 'grant' order by wallet_id, draw_rank"
    ):
        grants[wallet_id].append(GrantState(grant_id, kind, amount, granted_at, expires_at, rank))
    charges: dict[str, dict[datetime, tuple[datetime, Decimal]]] = defaultdict(dict)
    for wallet_id, hour, period, amount in con.rows(
        f"select wallet_id, valid_from, billing_period_start, amount from {INPUTS} "
        "where input_type = 'charge' and valid_from >= ? and valid_from < ?",
        [start - PERIOD_REACH, end],
    ):
        if hour in charges[wallet_id]:
            raise LedgerInputError(
                f"{wallet_id}: two billing periods charge hour {hour:%Y-%m-%d %H:%M} in "
                f"{INPUTS}: the customer has overlapping subscriptions (fix subscriptions.yml)"
            )
        charges[wallet_id][hour] = (period, amount)
    intervals = defaultdict(list)
    for wallet_id, valid_from, valid_to, period in con.rows(
        f"select wallet_id, valid_from, valid_to, billing_period_start from {INPUTS} "
        "where input_type = 'period' and valid_to > ? and valid_from <= ?",
        [start - PERIOD_REACH, end],
    ):
        intervals[wallet_id].append((valid_from, valid_to, period))
    return {
        "wallets": wallets,
        "grants": grants,
        "charges": charges,
        "calendars": {w: PeriodCalendar(w, intervals[w]) for w in wallets},
    }


def book_month(con, start: datetime, end: datetime) -> dict:
    """Replace the ledger entries of ``[start, end)`` inside the caller's transaction; returns
    a summary for the asset's metadata. ``con``: a DuckDB connection or the warehouse
    operations on either engine (orchestration/warehouse.py)."""
    con = as_tables(con, in_transaction=True)
    inputs = _read_inputs(con, start, end)
    # Earlier ledger rows, per grant: how it was booked and what is left of it; per open
    # billing period: what it drew from each grant.
    prior: dict[str, dict[str, dict]] = defaultdict(dict)
    balances: dict[str, Decimal] = defaultdict(lambda: ZERO)
    balance_previous_hour: dict[str, Decimal] = defaultdict(lambda: ZERO)
    top_ups: dict[str, Counter] = defaultdict(Counter)
    used: dict[str, dict[datetime, dict[str, Decimal]]] = defaultdict(lambda: defaultdict(dict))
    for wallet_id, grant_id, kind, entry_type, entry_ts, period, amount in con.rows(
        "select wallet_id, grant_id, grant_kind, entry_type, entry_ts, billing_period_start, "
        "amount from billing.wallet_ledger where entry_ts < ?",
        [start],
    ):
        g = prior[wallet_id].setdefault(
            grant_id, {"kind": kind, "remaining": ZERO, "booked": None, "expired": False}
        )
        g["remaining"] += amount
        if entry_type in ("grant", "top_up"):
            g["booked"] = (entry_type, entry_ts, amount)
        if entry_type == "top_up":
            top_ups[wallet_id][period] += 1
        g["expired"] |= entry_type == "expiry"
        if entry_type in ("deduction", "reversal") and period >= start - PERIOD_REACH:
            drawn = used[wallet_id][period]
            drawn[grant_id] = drawn.get(grant_id, ZERO) - amount
        balances[wallet_id] += amount
        if entry_ts <= start - HOUR:
            balance_previous_hour[wallet_id] += amount

    problems: list[str] = []
    results = {}
    for wallet_id, (spec, top_up_rank) in inputs["wallets"].items():
        known = prior.get(wallet_id, {})
        grants: list[GrantState] = []
        for cg in inputs["grants"][wallet_id]:
            g = GrantState(
                cg.grant_id, cg.kind, cg.amount, cg.granted_at, cg.expires_at, cg.draw_rank
            )
            was = known.get(cg.grant_id)
            if was is not None:
                if was["booked"] is None or was["booked"][2] != cg.amount:
                    problems.append(
                        f"{wallet_id}: grant {cg.grant_id} is booked in earlier months "
                        "with another amount or time than the catalog's"
                    )
                g.booked, g.remaining, g.expired = True, was["remaining"], was["expired"]
            grants.append(g)
        catalog_ids = {g.grant_id for g in inputs["grants"][wallet_id]}
        for grant_id, was in sorted(known.items()):
            if grant_id in catalog_ids:
                continue
            if was["booked"] is None or was["booked"][0] != "top_up":
                problems.append(
                    f"{wallet_id}: grant {grant_id} is in earlier months' ledger but no "
                    "longer in wallets.yml"
                )
                continue
            grants.append(
                GrantState(
                    grant_id,
                    "purchased",
                    was["booked"][2],
                    was["booked"][1],
                    None,
                    top_up_rank,
                    remaining=was["remaining"],
                    booked=True,
                    is_top_up=True,
                )  # fmt: skip
            )
        wallet_charges = inputs["charges"].get(wallet_id, {})
        # The billing periods open at the month start: what they drew, what they left due.
        charged_before: dict[datetime, Decimal] = defaultdict(lambda: ZERO)
        for hour, (period, amount) in wallet_charges.items():
            if hour < start:
                charged_before[period] += amount
        periods = {
            p: PeriodState(
                dict(used[wallet_id].get(p, {})),
                charged_before[p] - sum(used[wallet_id].get(p, {}).values(), ZERO),
            )
            for p in set(charged_before) | set(used[wallet_id])
        }
        hourly = {h: a for h, (_, a) in wallet_charges.items() if h >= start - HOUR}
        previous = balance_previous_hour[wallet_id] if hourly.get(start - HOUR, ZERO) > 0 else None
        try:
            result = simulate(
                spec,
                grants,
                hourly,
                start,
                end,
                inputs["calendars"][wallet_id],
                balance=balances[wallet_id],
                top_ups_by_period=top_ups[wallet_id],
                previous_hour_balance=previous,
                periods=periods,
            )
        except ValueError as exc:
            problems.append(str(exc))
            continue
        results[wallet_id] = (spec, result)
    if problems:
        raise LedgerInputError(
            "the ledger cannot be booked for this month:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nbook the earlier months first (a ranged backfill from the first wallet month), "
            "or re-run them after changing a wallet's past grants"
        )
    entries: list[LedgerEntry] = [e for _, r in results.values() for e in r.entries]
    entries.sort(key=lambda e: (e.wallet_id, e.entry_ts, e.entry_order))
    frame = pl.DataFrame(
        [e.row() for e in entries] or None, schema=LEDGER_SCHEMA, orient="row"
    ).select(LEDGER_COLUMNS)
    con.replace_where(
        "billing.wallet_ledger", "entry_ts >= ? and entry_ts < ?", [start, end], frame.to_arrow()
    )
    later = con.rows("select count(*) from billing.wallet_ledger where entry_ts >= ?", [end])[0][0]
    return {"results": results, "entries": entries, "later_rows": later}
