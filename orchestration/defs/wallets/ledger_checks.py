"""The wallet ledger's blocking checks: what each one asserts, and its SQL.

Each check is a query of the rows that break it (``wallet_id``, what is wrong), over
``billing.wallet_ledger`` and its input ``marts.int_wallets__draw_inputs``; a check passes
when its query returns nothing. The asset runs them all after booking (see ``ledger_asset``).
The SQL is what DuckDB and Spark both parse (``cast(... as string)``, no ``strftime``): the
checks run on either engine (``orchestration/warehouse.py``).
"""

from __future__ import annotations

from datetime import datetime

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from orchestration.defs.wallets.ledger import ENTRY_TYPES
from orchestration.defs.wallets.ledger_table import (
    INPUTS,
    LEDGER_KEY,
    LEDGER_ORDER,
    LEDGER_ORDER_DESC,
)
from orchestration.warehouse import as_tables

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
        select used.wallet_id, cast(cast(used.billing_period_start as date) as string)
            || ': credit used ' || cast(used.credit_used as string) || ', net charges '
            || cast(coalesce(charged.net_charges, 0) as string)
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
        select running.wallet_id, substr(cast(running.hour as string), 1, 16) || ': charge '
            || cast(running.charge as string) || ', deducted '
            || cast(running.deducted as string) || ', reversed '
            || cast(running.reversed as string) || ', ' || case
                when running.billing_period_start is null or running.charge = 0
                    then 'credit drawn for an hour without a charge'
                when running.charge > 0 and (running.reversed > 0 or running.overage < 0)
                    then 'drew more than the charge'
                when running.charge < 0 and (running.deducted > 0 or running.overage > 0)
                    then 'gave back more than the hour''s credit'
                when running.period_overage < 0
                    then 'credit used exceeds the period''s charges to date by '
                        || cast(-running.period_overage as string)
                when running.charge > 0
                    then 'left ' || cast(running.overage as string) || ' unpaid while '
                        || cast(eligible.eligible_after as string)
                        || ' of eligible credit remained'
                else 'gave credit back while ' || cast(running.period_overage as string)
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
    return as_tables(con).rows(sql)


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
