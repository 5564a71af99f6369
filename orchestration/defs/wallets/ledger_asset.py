"""``billing/wallet_ledger`` (monthly partitions): the prepaid-wallet ledger.

Each month run draws the month's hourly charges down the wallets' grants with the rules of
:mod:`orchestration.defs.wallets.ledger` and replaces exactly that month's entries
(``entry_ts`` in the month) of ``billing.wallet_ledger`` in one transaction. Its inputs are
the dbt view ``marts.int_wallets__draw_inputs`` and nothing else (charges with their billing
period, grants in draw order, top-up rules, the billing-period calendar), plus the state the
earlier months left in the ledger itself (each grant's remainder, top-ups already used in the
billing period, what the open billing period drew from each grant). So months are booked in
order: a ranged backfill is one run that books its months one after the other. Re-running a
month gives identical rows; later months then need re-running too (their opening state may
have changed).
"""

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
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
    ENTRY_TYPES,
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

MONEY = pl.Decimal(38, PRICE_SCALE)
LEDGER_KEY = AssetKey(["billing", "wallet_ledger"])
INPUTS_KEY = AssetKey(["marts", "int_wallets__draw_inputs"])
INPUTS = "marts.int_wallets__draw_inputs"
OWNERS = ["team:billing"]
#: A billing period is at most 31 days: the open period at a month's start began within this.
PERIOD_REACH = timedelta(days=32)

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
    entry_order integer not null,
    usage_hour timestamp,
    billing_period_start timestamp not null,
    amount decimal(38, 18) not null,
    grant_remaining_after decimal(38, 18) not null,
    wallet_balance_after decimal(38, 18) not null
);
-- Ledgers booked before entry_order existed: re-run their months to number the entries.
alter table billing.wallet_ledger add column if not exists entry_order integer;
"""
LEDGER_COLUMNS = [
    "entry_id", "wallet_id", "customer_id", "currency", "grant_id", "grant_kind", "entry_type",
    "entry_ts", "entry_order", "usage_hour", "billing_period_start", "amount",
    "grant_remaining_after", "wallet_balance_after",
]  # fmt: skip
LEDGER_SCHEMA: dict[str, pl.DataType] = {
    **dict.fromkeys(LEDGER_COLUMNS[:7], pl.String),
    "entry_ts": pl.Datetime("us"),
    "entry_order": pl.Int32,
    "usage_hour": pl.Datetime("us"),
    "billing_period_start": pl.Datetime("us"),
    "amount": MONEY,
    "grant_remaining_after": MONEY,
    "wallet_balance_after": MONEY,
}
#: The order entries were booked in (ledger.py numbers them within an instant).
LEDGER_ORDER = "entry_ts, entry_order"
LEDGER_ORDER_DESC = "entry_ts desc, entry_order desc"


class LedgerInputError(Exception):
    """The warehouse cannot be booked as is (catalog not loaded, months out of order...)."""


def _months(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    months, cursor = [], start
    while cursor < end:
        nxt = (cursor.replace(day=1) + (HOUR * 24 * 32)).replace(day=1)
        months.append((cursor, min(nxt, end)))
        cursor = nxt
    return months


def _relation_exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from information_schema.tables where table_schema = ? "
            "and table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )


def _read_inputs(con, start: datetime, end: datetime) -> dict:
    """The rows of ``int_wallets__draw_inputs`` a month needs: wallets, grants, the charges of
    the billing periods open in it, and the calendar around it."""
    if not _relation_exists(con, "marts", "int_wallets__draw_inputs"):
        raise LedgerInputError(
            f"{INPUTS} is missing: run catalog_job, then the hourly job (its dbt build "
            "creates the view) before booking wallets"
        )
    wallets = {}
    for wallet_id, customer_id, currency, amount, threshold, max_per, rank in con.execute(
        f"select wallet_id, customer_id, currency, amount, threshold, max_per_period, "
        f"draw_rank from {INPUTS} where input_type = 'wallet' order by wallet_id"
    ).fetchall():
        rule = TopUpRule(threshold, amount, max_per, rank) if threshold is not None else None
        wallets[wallet_id] = (WalletSpec(wallet_id, customer_id, currency, rule), rank)
    grants = defaultdict(list)
    for wallet_id, grant_id, kind, amount, granted_at, expires_at, rank in con.execute(
        f"select wallet_id, grant_id, grant_kind, amount, valid_from, valid_to, draw_rank "
        f"from {INPUTS} where input_type = 'grant' order by wallet_id, draw_rank"
    ).fetchall():
        grants[wallet_id].append(GrantState(grant_id, kind, amount, granted_at, expires_at, rank))
    charges: dict[str, dict[datetime, tuple[datetime, Decimal]]] = defaultdict(dict)
    for wallet_id, hour, period, amount in con.execute(
        f"select wallet_id, valid_from, billing_period_start, amount from {INPUTS} "
        "where input_type = 'charge' and valid_from >= ? and valid_from < ?",
        [start - PERIOD_REACH, end],
    ).fetchall():
        if hour in charges[wallet_id]:
            raise LedgerInputError(
                f"{wallet_id}: two billing periods charge hour {hour:%Y-%m-%d %H:%M} in "
                f"{INPUTS}: the customer has overlapping subscriptions (fix subscriptions.yml)"
            )
        charges[wallet_id][hour] = (period, amount)
    intervals = defaultdict(list)
    for wallet_id, valid_from, valid_to, period in con.execute(
        f"select wallet_id, valid_from, valid_to, billing_period_start from {INPUTS} "
        "where input_type = 'period' and valid_to > ? and valid_from <= ?",
        [start - PERIOD_REACH, end],
    ).fetchall():
        intervals[wallet_id].append((valid_from, valid_to, period))
    return {
        "wallets": wallets,
        "grants": grants,
        "charges": charges,
        "calendars": {w: PeriodCalendar(w, intervals[w]) for w in wallets},
    }


def book_month(con, start: datetime, end: datetime) -> dict:
    """Replace the ledger entries of ``[start, end)`` inside the caller's transaction; returns
    a summary for the asset's metadata."""
    inputs = _read_inputs(con, start, end)
    # Earlier ledger rows, per grant: how it was booked and what is left of it; per open
    # billing period: what it drew from each grant.
    prior: dict[str, dict[str, dict]] = defaultdict(dict)
    balances: dict[str, Decimal] = defaultdict(lambda: ZERO)
    balance_previous_hour: dict[str, Decimal] = defaultdict(lambda: ZERO)
    top_ups: dict[str, Counter] = defaultdict(Counter)
    used: dict[str, dict[datetime, dict[str, Decimal]]] = defaultdict(lambda: defaultdict(dict))
    for wallet_id, grant_id, kind, entry_type, entry_ts, period, amount in con.execute(
        "select wallet_id, grant_id, grant_kind, entry_type, entry_ts, billing_period_start, "
        "amount from billing.wallet_ledger where entry_ts < ?",
        [start],
    ).fetchall():
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
    "wallet_balance_identity": "Per wallet, grants + top-ups = credit used (deductions - "
    "reversals) + expiries + balance, and every entry's wallet_balance_after is the running "
    "sum of the amounts in booking order; every entry's sign matches its type.",
    "credit_used_within_net_charges": "Per wallet and billing period, the credit used "
    "(deductions - reversals) is between 0 and the period's net charges "
    "(int_wallets__draw_inputs): a negative hourly charge gives its credit back.",
    "credit_used_is_min_of_eligible_credit_and_net_charges": "Per wallet and billing period, "
    "credit used = min(credit available, net charges), credit available read as the credit "
    "eligible when each hour was drawn (credit that becomes eligible later does not pay an "
    "earlier hour: that hour's shortfall is overage). Hour by hour, from the charges of "
    "int_wallets__draw_inputs and the hour's deductions and reversals: a positive hour draws "
    "at most its charge and leaves overage only when no eligible credit is left after its "
    "draw; a negative hour gives back at most its credit, and gives credit back only once the "
    "period's overage is cancelled; the period's overage to date is never negative.",
    "reversals_within_period_deductions": "Per wallet, billing period and grant, reversals "
    "never give back more than the period drew from the grant, and credit given back after "
    "the grant's validity expires at the same instant.",
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
        select wallet_id, 'grants + top-ups <> used + expiries + balance'
        from ordered group by wallet_id
        having
            sum(case when entry_type in ('grant', 'top_up') then amount else 0 end)
            <> -sum(case when entry_type in ('deduction', 'reversal') then amount else 0 end)
            - sum(case when entry_type = 'expiry' then amount else 0 end)
            + max(case when from_end = 1 then wallet_balance_after end)
        union all
        select wallet_id, entry_id from billing.wallet_ledger
        where (entry_type in ('grant', 'top_up', 'reversal') and amount <= 0)
           or (entry_type in ('deduction', 'expiry') and amount >= 0)
           or entry_type not in ({", ".join(f"'{t}'" for t in ENTRY_TYPES)})
    """,
    "credit_used_within_net_charges": f"""
        with used as (
            select wallet_id, billing_period_start, -sum(amount) as credit_used
            from billing.wallet_ledger
            where entry_type in ('deduction', 'reversal')
            group by all
        ),
        charged as (
            select wallet_id, billing_period_start, sum(amount) as net_charges
            from {INPUTS}
            where input_type = 'charge'
            group by all
        )
        select used.wallet_id, strftime(used.billing_period_start, '%Y-%m-%d')
            || ': credit used ' || cast(used.credit_used as varchar) || ', net charges '
            || cast(coalesce(charged.net_charges, 0) as varchar)
        from used
        left join charged
            on used.wallet_id = charged.wallet_id
            and used.billing_period_start = charged.billing_period_start
        where used.credit_used < 0 or used.credit_used > coalesce(charged.net_charges, 0)
    """,
    # Overage of an hour = its charge - its deductions + its reversals (what the draw or the
    # reversal left due, negative when a reversal cancelled overage); the period's overage to
    # date is its running sum. Eligible credit after an hour's draw = what the grants paying
    # that hour have left after every entry at or before it (grants, top-ups and expiries of
    # an instant are booked before its draw). {until}: hours from there on are not booked yet.
    "credit_used_is_min_of_eligible_credit_and_net_charges": f"""
        with charges as (
            select wallet_id, valid_from as hour, billing_period_start, amount as charge
            from {INPUTS}
            where input_type = 'charge' and valid_from < {{until}}
        ),
        draws as (
            select
                wallet_id,
                usage_hour as hour,
                -sum(case when entry_type = 'deduction' then amount else 0 end) as deducted,
                sum(case when entry_type = 'reversal' then amount else 0 end) as reversed
            from billing.wallet_ledger
            where entry_type in ('deduction', 'reversal') and usage_hour < {{until}}
            group by all
        ),
        hours as (
            select
                coalesce(charges.wallet_id, draws.wallet_id) as wallet_id,
                coalesce(charges.hour, draws.hour) as hour,
                charges.billing_period_start,
                coalesce(charges.charge, 0) as charge,
                coalesce(draws.deducted, 0) as deducted,
                coalesce(draws.reversed, 0) as reversed,
                coalesce(charges.charge, 0) - coalesce(draws.deducted, 0)
                + coalesce(draws.reversed, 0) as overage
            from charges
            full join draws on charges.wallet_id = draws.wallet_id and charges.hour = draws.hour
        ),
        running as (
            select
                *,
                sum(overage) over (
                    partition by wallet_id, billing_period_start order by hour
                    rows between unbounded preceding and current row
                ) as period_overage
            from hours
        ),
        grants as (
            select booked.wallet_id, booked.grant_id, booked.entry_ts as granted_at,
                catalog.valid_to as expires_at
            from billing.wallet_ledger booked
            left join {INPUTS} catalog
                on catalog.input_type = 'grant' and catalog.wallet_id = booked.wallet_id
                and catalog.grant_id = booked.grant_id
            where booked.entry_type in ('grant', 'top_up')
        ),
        eligible as (
            select running.wallet_id, running.hour, sum(entries.amount) as eligible_after
            from running
            inner join grants
                on grants.wallet_id = running.wallet_id and grants.granted_at <= running.hour
                and (grants.expires_at is null
                    or running.hour + interval 1 hour <= grants.expires_at)
            inner join billing.wallet_ledger entries
                on entries.wallet_id = grants.wallet_id and entries.grant_id = grants.grant_id
                and entries.entry_ts <= running.hour
            where running.charge > 0 and running.overage > 0
            group by all
        )
        select running.wallet_id, strftime(running.hour, '%Y-%m-%d %H:%M') || ': charge '
            || cast(running.charge as varchar) || ', deducted '
            || cast(running.deducted as varchar) || ', reversed '
            || cast(running.reversed as varchar) || ', ' || case
                when running.billing_period_start is null or running.charge = 0
                    then 'credit drawn for an hour without a charge'
                when running.charge > 0 and (running.reversed > 0 or running.overage < 0)
                    then 'drew more than the charge'
                when running.charge < 0 and (running.deducted > 0 or running.overage > 0)
                    then 'gave back more than the hour''s credit'
                when running.period_overage < 0
                    then 'credit used exceeds the period''s charges to date by '
                        || cast(-running.period_overage as varchar)
                when running.charge > 0
                    then 'left ' || cast(running.overage as varchar) || ' unpaid while '
                        || cast(eligible.eligible_after as varchar)
                        || ' of eligible credit remained'
                else 'gave credit back while ' || cast(running.period_overage as varchar)
                    || ' of the period''s overage was still due'
            end
        from running
        left join eligible
            on eligible.wallet_id = running.wallet_id and eligible.hour = running.hour
        where running.billing_period_start is null
            or (running.charge = 0 and (running.deducted <> 0 or running.reversed <> 0))
            or (running.charge > 0 and (running.reversed > 0 or running.overage < 0))
            or (running.charge < 0 and (running.deducted > 0 or running.overage > 0))
            or running.period_overage < 0
            or (running.charge > 0 and running.overage > 0 and eligible.eligible_after > 0)
            or (running.charge < 0 and running.reversed > 0 and running.period_overage > 0)
        order by running.wallet_id, running.hour
    """,
    "reversals_within_period_deductions": f"""
        select wallet_id, billing_period_start || ' ' || grant_id
        from billing.wallet_ledger
        where entry_type in ('deduction', 'reversal')
        group by wallet_id, billing_period_start, grant_id
        having sum(amount) > 0
        union all
        select r.wallet_id, r.entry_id
        from billing.wallet_ledger r
        inner join {INPUTS} g
            on g.input_type = 'grant' and g.wallet_id = r.wallet_id and g.grant_id = r.grant_id
        left join billing.wallet_ledger x
            on x.wallet_id = r.wallet_id and x.grant_id = r.grant_id
            and x.entry_type = 'expiry' and x.entry_ts = r.entry_ts
            and x.entry_order = r.entry_order + 1 and x.amount = -r.amount
        where r.entry_type = 'reversal' and g.valid_to <= r.entry_ts and x.entry_id is null
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


def check_violations(con, name: str, until: datetime | None = None) -> list[tuple[str, str]]:
    """``(wallet_id, what)`` of every violation of check ``name``; ``until`` (exclusive) is
    where the booked months end: later hours are not drawn yet (default: every hour)."""
    sql = _CHECK_SQL[name]
    if "{until}" in sql:
        bound = datetime(9999, 12, 31) if until is None else until
        sql = sql.replace("{until}", f"timestamp '{bound:%Y-%m-%d %H:%M:%S}'")
    return con.execute(sql).fetchall()


def run_checks(con, until: datetime | None = None) -> list[AssetCheckResult]:
    results = []
    for name in CHECKS:
        bad = check_violations(con, name, until)
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
    totals: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(lambda: ZERO))
    last: dict[str, tuple] = {}
    for month in months:
        for e in month["entries"]:
            by_type[e.entry_type] += 1
        for wallet_id, (spec, result) in month["results"].items():
            overage = sum(result.overage.values(), ZERO)
            for name, value in (
                ("deducted", result.deducted),
                ("reversed", result.reversed),
                ("credits_used", result.credits_used),
                ("overage", overage),
            ):
                totals[name][spec.currency] += value
            prev = last.get(wallet_id)
            last[wallet_id] = (
                spec,
                result,
                (prev[2] if prev else ZERO) + result.credits_used,
                (prev[3] if prev else ZERO) + overage,
            )
    balances = (
        "| wallet | customer | currency | balance at end | credits used | overage | top-ups |\n"
    )
    balances += "|---|---|---|---|---|---|---|\n" + "\n".join(
        f"| {w} | {spec.customer_id} | {spec.currency} | {_money(r.balance)} | "
        f"{_money(d)} | {_money(o)} | {sum(1 for e in r.entries if e.entry_type == 'top_up')} |"
        for w, (spec, r, d, o) in sorted(last.items())
    )
    return {
        "entries_by_type": {t: by_type.get(t, 0) for t in ENTRY_TYPES},
        **{
            f"total_{name}" if name != "overage" else name: {
                c: _money(v) for c, v in sorted(totals[name].items())
            }
            for name in ("deducted", "reversed", "credits_used", "overage")
        },
        "balances_at_month_end": MetadataValue.md(balances),
        "later_rows_to_rebook": sum(m["later_rows"] for m in months[-1:]),
        "dagster/row_count": sum(len(m["entries"]) for m in months),
    }


@asset(
    key=LEDGER_KEY,
    description=(
        "The prepaid-wallet ledger (billing.wallet_ledger): every grant, auto top-up, "
        "deduction, reversal and expiry of every wallet, with the grant's remainder and the "
        "wallet balance after it. Each monthly partition draws the month's hourly charges "
        "down the wallets' grants in the draw order of int_wallets__draw_inputs, gives credit "
        "back (reversal) for negative hours, and replaces exactly the month's entries in one "
        "transaction. What credits cannot cover stays due on the invoice (overage)."
    ),
    deps=[
        INPUTS_KEY,
        AssetKey(["catalog", "wallets"]),
        AssetKey(["catalog", "wallet_grants"]),
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
        checks = run_checks(con, until=end)
    metadata = _metadata(months)
    context.log.info(f"booked {metadata['dagster/row_count']} ledger entries for {start:%Y-%m}")
    yield MaterializeResult(asset_key=LEDGER_KEY, metadata=metadata)
    yield from checks
