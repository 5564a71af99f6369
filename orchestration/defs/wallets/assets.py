"""Prepaid wallets: the monthly ledger of credit grants and draw-downs.

``wallets.yml`` is loaded with the pricing catalog, in the same transaction, by
``pricing_catalog`` (see :mod:`orchestration.defs.wallets.catalog`).

- ``billing/wallet_ledger`` (monthly partitions): draws each month's rated charges
  (``marts.fct_rated_charges_hourly``) down the wallets' grants with the rules of
  :mod:`orchestration.defs.wallets.ledger` and replaces exactly that month's entries
  (``entry_ts`` in the month) of ``billing.wallet_ledger`` in one transaction. The state at the
  month start (each grant's remainder, top-ups already used in the billing period) comes from
  the earlier ledger rows, so months are booked in order: a ranged backfill is one run that
  books its months one after the other. Re-running a month gives identical rows; later months
  then need re-running too (their opening state may have changed).
"""

from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import duckdb
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from contracts.catalog import PRICE_SCALE
from orchestration.defs.partitions import monthly_partitions
from orchestration.defs.resources import WAREHOUSE_POOL, Warehouse
from orchestration.defs.wallets.ledger import (
    HOUR,
    ZERO,
    GrantState,
    LedgerEntry,
    SubscriptionPeriod,
    TopUpRule,
    WalletSpec,
    ledger_order_key,
    low_balance_crossings,
    period_function,
    simulate,
)

MONEY = pl.Decimal(38, PRICE_SCALE)
LEDGER_KEY = AssetKey(["billing", "wallet_ledger"])
OWNERS = ["team:billing"]

LEDGER_DDL = """
create schema if not exists billing;
create table if not exists billing.wallet_ledger (
    entry_id varchar not null,
    wallet_id varchar not null,
    customer_id varchar not null,
    currency varchar not null,
    grant_id varchar not null,
    grant_kind varchar not null,
    entry_type varchar not null,
    entry_ts timestamp not null,
    usage_hour timestamp,
    billing_period_start timestamp not null,
    amount decimal(38, 18) not null,
    grant_remaining_after decimal(38, 18) not null,
    wallet_balance_after decimal(38, 18) not null
);
"""
LEDGER_COLUMNS = [
    "entry_id", "wallet_id", "customer_id", "currency", "grant_id", "grant_kind", "entry_type",
    "entry_ts", "usage_hour", "billing_period_start", "amount", "grant_remaining_after",
    "wallet_balance_after",
]  # fmt: skip
LEDGER_SCHEMA: dict[str, pl.DataType] = {
    **dict.fromkeys(LEDGER_COLUMNS[:7], pl.String),
    "entry_ts": pl.Datetime("us"),
    "usage_hour": pl.Datetime("us"),
    "billing_period_start": pl.Datetime("us"),
    "amount": MONEY,
    "grant_remaining_after": MONEY,
    "wallet_balance_after": MONEY,
}
#: The order entries were booked in, in SQL (see ledger.ledger_order_key): within an instant,
#: credits by rising balance, then debits by falling balance.
_ORDER_TERMS = [
    "entry_ts",
    "case when amount > 0 then 0 else 1 end",
    "case when amount > 0 then wallet_balance_after else -wallet_balance_after end",
]
LEDGER_ORDER = ", ".join(_ORDER_TERMS)
LEDGER_ORDER_DESC = ", ".join(f"{t} desc" for t in _ORDER_TERMS)


class LedgerInputError(Exception):
    """The warehouse cannot be booked as is (catalog not loaded, months out of order...)."""


def _months(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    months, cursor = [], start
    while cursor < end:
        nxt = (cursor.replace(day=1) + (HOUR * 24 * 32)).replace(day=1)
        months.append((cursor, min(nxt, end)))
        cursor = nxt
    return months


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from information_schema.tables where table_schema = ? "
            "and table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def _wallet_specs(con) -> list[tuple[WalletSpec, list[GrantState], list[Decimal]]]:
    for table in ("wallets", "wallet_grants", "wallet_alerts", "subscriptions"):
        if not _table_exists(con, "catalog", table):
            raise LedgerInputError(f"catalog.{table} is missing: run catalog_job (pricing_catalog)")
    grants = defaultdict(list)
    for wallet_id, grant_id, kind, amount, granted_at, expires_at, priority in con.execute(
        "select wallet_id, grant_id, kind, amount, granted_at, expires_at, priority "
        "from catalog.wallet_grants order by wallet_id, grant_id"
    ).fetchall():
        grants[wallet_id].append(
            GrantState(grant_id, kind, amount, granted_at, expires_at, priority)
        )
    alerts = defaultdict(list)
    for wallet_id, threshold in con.execute(
        "select wallet_id, threshold from catalog.wallet_alerts"
    ).fetchall():
        alerts[wallet_id].append(threshold)
    specs = []
    for row in con.execute(
        "select wallet_id, customer_id, currency, auto_top_up_threshold, auto_top_up_amount, "
        "auto_top_up_max_per_period, auto_top_up_priority from catalog.wallets order by 1"
    ).fetchall():
        wallet_id, customer_id, currency, threshold, amount, max_per_period, priority = row
        rule = (
            TopUpRule(threshold, amount, max_per_period, priority or 0)
            if threshold is not None
            else None
        )
        specs.append(
            (
                WalletSpec(wallet_id, customer_id, currency, rule),
                grants[wallet_id],
                alerts[wallet_id],
            )
        )
    return specs


def _period_functions(con) -> dict:
    subs = defaultdict(list)
    for customer_id, starts_at, ends_at, anchor in con.execute(
        "select customer_id, starts_at, ends_at, billing_anchor_day from catalog.subscriptions"
    ).fetchall():
        subs[customer_id].append(SubscriptionPeriod(starts_at, ends_at, anchor))
    return defaultdict(
        lambda: period_function([]), {c: period_function(s) for c, s in subs.items()}
    )


def book_month(con, start: datetime, end: datetime) -> dict:
    """Replace the ledger entries of ``[start, end)`` inside the caller's transaction; returns
    a summary for the asset's metadata."""
    if not _table_exists(con, "marts", "fct_rated_charges_hourly"):
        raise LedgerInputError("marts.fct_rated_charges_hourly is missing: rate the hours first")
    specs = _wallet_specs(con)
    periods = _period_functions(con)
    charges: dict[str, dict[datetime, Decimal]] = defaultdict(dict)
    for customer_id, hour, amount in con.execute(
        "select r.customer_id, r.usage_hour, sum(r.amount) from marts.fct_rated_charges_hourly r "
        "inner join catalog.wallets w on r.customer_id = w.customer_id "
        "and r.currency = w.currency where r.usage_hour >= ? and r.usage_hour < ? group by all",
        [start - HOUR, end],
    ).fetchall():
        charges[customer_id][hour] = amount
    # Earlier ledger rows, per grant: how it was booked and what is left of it.
    prior: dict[str, dict[str, dict]] = defaultdict(dict)
    balances: dict[str, Decimal] = defaultdict(lambda: ZERO)
    balance_previous_hour: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for wallet_id, grant_id, kind, entry_type, entry_ts, amount in con.execute(
        "select wallet_id, grant_id, grant_kind, entry_type, entry_ts, amount "
        "from billing.wallet_ledger where entry_ts < ?",
        [start],
    ).fetchall():
        g = prior[wallet_id].setdefault(
            grant_id, {"kind": kind, "remaining": ZERO, "booked": None, "expired": False}
        )
        g["remaining"] += amount
        if entry_type in ("grant", "top_up"):
            g["booked"] = (entry_type, entry_ts, amount)
        g["expired"] |= entry_type == "expiry"
        balances[wallet_id] += amount
        if entry_ts <= start - HOUR:
            balance_previous_hour[wallet_id] += amount

    problems: list[str] = []
    results = {}
    for spec, catalog_grants, thresholds in specs:
        period_of = periods[spec.customer_id]
        known = prior.get(spec.wallet_id, {})
        grants: list[GrantState] = []
        top_ups: Counter = Counter()
        for cg in catalog_grants:
            g = GrantState(
                cg.grant_id, cg.kind, cg.amount, cg.granted_at, cg.expires_at, cg.priority
            )
            was = known.get(cg.grant_id)
            if was is not None:
                if was["booked"] is None or was["booked"][2] != cg.amount:
                    problems.append(
                        f"{spec.wallet_id}: grant {cg.grant_id} is booked in earlier months "
                        "with another amount or time than the catalog's"
                    )
                g.booked, g.remaining, g.expired = True, was["remaining"], was["expired"]
            grants.append(g)
        catalog_ids = {g.grant_id for g in catalog_grants}
        for grant_id, was in sorted(known.items()):
            if grant_id in catalog_ids:
                continue
            if was["booked"] is None or was["booked"][0] != "top_up":
                problems.append(
                    f"{spec.wallet_id}: grant {grant_id} is in earlier months' ledger but no "
                    "longer in wallets.yml"
                )
                continue
            granted_at = was["booked"][1]
            top_ups[period_of(granted_at)] += 1
            rule = spec.auto_top_up
            grants.append(
                GrantState(
                    grant_id,
                    "purchased",
                    was["booked"][2],
                    granted_at,
                    None,
                    rule.priority if rule else 0,
                    remaining=was["remaining"],
                    booked=True,
                    is_top_up=True,
                )  # fmt: skip
            )
        customer_charges = charges.get(spec.customer_id, {})
        previous = (
            balance_previous_hour[spec.wallet_id]
            if customer_charges.get(start - HOUR, ZERO) > 0
            else None
        )
        try:
            result = simulate(
                spec,
                grants,
                customer_charges,
                start,
                end,
                period_of,
                balance=balances[spec.wallet_id],
                top_ups_by_period=top_ups,
                previous_hour_balance=previous,
            )
        except ValueError as exc:
            problems.append(str(exc))
            continue
        results[spec.wallet_id] = (spec, thresholds, balances[spec.wallet_id], result)
    if problems:
        raise LedgerInputError(
            "the ledger cannot be booked for this month:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nbook the earlier months first (a ranged backfill from the first wallet month), "
            "or re-run them after changing a wallet's past grants"
        )
    entries: list[LedgerEntry] = [e for *_, r in results.values() for e in r.entries]
    entries.sort(key=ledger_order_key)
    frame = pl.DataFrame(
        [e.row() for e in entries] or None, schema=LEDGER_SCHEMA, orient="row"
    ).select(LEDGER_COLUMNS)
    con.execute(
        "delete from billing.wallet_ledger where entry_ts >= ? and entry_ts < ?", [start, end]
    )
    con.register("incoming_ledger", frame.to_arrow())
    con.execute("insert into billing.wallet_ledger by name select * from incoming_ledger")
    con.unregister("incoming_ledger")
    later = con.execute(
        "select count(*) from billing.wallet_ledger where entry_ts >= ?", [end]
    ).fetchone()[0]
    return {"results": results, "entries": entries, "later_rows": later}


CHECKS = {
    "wallet_balance_identity": "Per wallet, grants + top-ups - deductions - expiries equals "
    "the balance: every entry's wallet_balance_after is the running sum of the amounts.",
    "deductions_within_grant_remaining": "No deduction exceeds what its grant had left: every "
    "entry's grant_remaining_after is the running sum of its grant's amounts and is >= 0.",
    "deductions_within_grant_validity": "No deduction draws on a grant before it is granted or "
    "for an hour that ends after it expires.",
    "no_negative_balance": "No wallet balance and no grant remainder is ever negative.",
}

_CHECK_SQL = {
    "wallet_balance_identity": f"""
        with ordered as (
            select
                *,
                sum(amount) over (partition by wallet_id order by {LEDGER_ORDER}
                    rows between unbounded preceding and current row) as running,
                row_number() over (partition by wallet_id order by {LEDGER_ORDER_DESC})
                    as from_end
            from billing.wallet_ledger
        )
        select wallet_id, entry_id from ordered where running <> wallet_balance_after
        union all
        select wallet_id, 'grants + top-ups - deductions - expiries <> balance'
        from ordered group by wallet_id
        having
            sum(case when entry_type in ('grant', 'top_up') then amount else 0 end)
            - sum(case when entry_type in ('deduction', 'expiry') then -amount else 0 end)
            <> max(case when from_end = 1 then wallet_balance_after end)
        union all
        select wallet_id, entry_id from billing.wallet_ledger
        where (entry_type in ('grant', 'top_up') and amount <= 0)
           or (entry_type in ('deduction', 'expiry') and amount >= 0)
    """,
    "deductions_within_grant_remaining": f"""
        select wallet_id, entry_id from (
            select *, sum(amount) over (partition by wallet_id, grant_id order by {LEDGER_ORDER}
                rows between unbounded preceding and current row) as running
            from billing.wallet_ledger)
        where running <> grant_remaining_after or grant_remaining_after < 0
    """,
    "deductions_within_grant_validity": """
        select d.wallet_id, d.entry_id
        from billing.wallet_ledger d
        left join billing.wallet_ledger g
            on g.wallet_id = d.wallet_id and g.grant_id = d.grant_id
            and g.entry_type in ('grant', 'top_up')
        left join catalog.wallet_grants c
            on c.wallet_id = d.wallet_id and c.grant_id = d.grant_id
        where d.entry_type = 'deduction' and (
            g.entry_id is null
            or d.usage_hour is null
            or d.usage_hour <> d.entry_ts
            or d.usage_hour < g.entry_ts
            or (c.expires_at is not null and d.usage_hour + interval 1 hour > c.expires_at))
    """,
    "no_negative_balance": """
        select wallet_id, entry_id from billing.wallet_ledger
        where wallet_balance_after < 0 or grant_remaining_after < 0
    """,
}


def run_checks(con) -> list[AssetCheckResult]:
    results = []
    for name in CHECKS:
        bad = con.execute(_CHECK_SQL[name]).fetchall()
        results.append(
            AssetCheckResult(
                asset_key=LEDGER_KEY,
                check_name=name,
                passed=not bad,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "violations": len(bad),
                    "sample": MetadataValue.md(
                        "\n".join(f"- {w}: {e}" for w, e in bad[:10]) or "none"
                    ),
                },
            )
        )
    return results


def _money(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


def _metadata(months: list[dict]) -> dict:
    by_type: Counter = Counter()
    deducted: dict[str, Decimal] = defaultdict(lambda: ZERO)
    overage: dict[str, Decimal] = defaultdict(lambda: ZERO)
    crossings = []
    last: dict[str, tuple] = {}
    for month in months:
        for e in month["entries"]:
            by_type[e.entry_type] += 1
        for wallet_id, (spec, thresholds, opening, result) in month["results"].items():
            deducted[spec.currency] += result.deducted
            overage[spec.currency] += sum(result.overage.values(), ZERO)
            crossings += low_balance_crossings(result.entries, thresholds, opening)
            prev = last.get(wallet_id)
            last[wallet_id] = (
                spec,
                result,
                (prev[2] if prev else ZERO) + result.deducted,
                (prev[3] if prev else ZERO) + sum(result.overage.values(), ZERO),
            )
    balances = "| wallet | customer | currency | balance at end | deducted | overage | top-ups |\n"
    balances += "|---|---|---|---|---|---|---|\n" + "\n".join(
        f"| {w} | {spec.customer_id} | {spec.currency} | {_money(r.balance)} | "
        f"{_money(d)} | {_money(o)} | {sum(1 for e in r.entries if e.entry_type == 'top_up')} |"
        for w, (spec, r, d, o) in sorted(last.items())
    )
    crossing_md = "| wallet | threshold | at | balance after |\n|---|---|---|---|\n" + "\n".join(
        f"| {e.wallet_id} | {_money(t)} | {e.entry_ts:%Y-%m-%d %H:%M} | "
        f"{_money(e.wallet_balance_after)} |"
        for t, e in crossings
    )
    return {
        "entries_by_type": {
            t: by_type.get(t, 0) for t in ("grant", "top_up", "deduction", "expiry")
        },
        "total_deducted": {c: _money(v) for c, v in sorted(deducted.items())},
        "overage": {c: _money(v) for c, v in sorted(overage.items())},
        "balances_at_month_end": MetadataValue.md(balances),
        "low_balance_crossings": len(crossings),
        "low_balance_crossing_list": MetadataValue.md(crossing_md),
        "later_rows_to_rebook": sum(m["later_rows"] for m in months[-1:]),
        "dagster/row_count": sum(len(m["entries"]) for m in months),
    }


@asset(
    key=LEDGER_KEY,
    description=(
        "The prepaid-wallet ledger (billing.wallet_ledger): every grant, auto top-up, "
        "deduction and expiry of every wallet, with the grant's remainder and the wallet "
        "balance after it. Each monthly partition draws the month's rated charges hour by hour "
        "down the wallets' grants (priority, earliest expiry, promotional first, oldest, id) "
        "from the state the earlier months left, and replaces exactly the month's entries in "
        "one transaction. What credits cannot cover stays due on the invoice (overage)."
    ),
    deps=[
        AssetKey(["marts", "fct_rated_charges_hourly"]),
        AssetKey(["catalog", "wallets"]),
        AssetKey(["catalog", "wallet_grants"]),
        AssetKey(["catalog", "subscriptions"]),
    ],
    partitions_def=monthly_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="wallets",
    kinds={"python", "duckdb"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    check_specs=[
        # Blocking: a ledger that does not reconcile must not reach the invoices.
        AssetCheckSpec(name, asset=LEDGER_KEY, description=d, blocking=True)
        for name, d in CHECKS.items()
    ],
)
def wallet_ledger(context: AssetExecutionContext, warehouse: Warehouse):
    window = context.partition_time_window
    start = window.start.astimezone(UTC).replace(tzinfo=None)
    end = window.end.astimezone(UTC).replace(tzinfo=None)
    months = []
    with warehouse.connect() as con:
        con.execute(LEDGER_DDL)
        con.execute("begin transaction")
        try:
            for month_start, month_end in _months(start, end):
                months.append(book_month(con, month_start, month_end))
            con.execute("commit")
        except LedgerInputError as exc:
            con.execute("rollback")
            raise Failure(description=str(exc)) from None
        except Exception:
            con.execute("rollback")
            raise
        checks = run_checks(con)
    metadata = _metadata(months)
    context.log.info(f"booked {metadata['dagster/row_count']} ledger entries for {start:%Y-%m}")
    yield MaterializeResult(asset_key=LEDGER_KEY, metadata=metadata)
    yield from checks
