"""The spend controls of a month, in words: the demo summary's section on cost-plus prices,
spend caps, quotas and the enforcement file."""

from __future__ import annotations

from datetime import datetime

import duckdb

from orchestration.defs.enforcement.state import as_of_hour, blocked_entries

COST_PLUS_SQL = """
select rated.currency, count(distinct rated.customer_id), sum(rated.amount),
    sum(rated.provider_cost)
from marts.fct_rated_charges_hourly as rated
inner join marts.dim_prices as prices
    on rated.price_id = prices.price_id and rated.price_version = prices.price_version
where prices.pricing_model = 'cost_plus' and rated.usage_hour >= ? and rated.usage_hour < ?
group by 1 order by 1
"""
CAPS_SQL = """
select rated.subscription_id, rated.currency, caps.max_spend, sum(rated.amount),
    sum(rated.forgiven_amount), min(case when rated.forgiven_amount > 0 then rated.usage_hour end)
from marts.fct_rated_charges_hourly as rated
inner join marts.dim_spend_caps as caps
    on rated.subscription_id = caps.subscription_id and caps.price_id is null
where rated.usage_hour >= ? and rated.usage_hour < ?
group by 1, 2, 3 having sum(rated.forgiven_amount) > 0 order by 1
"""
QUOTAS_SQL = """
select subscription_id, limit_id, enforcement, metric, used, max_value, reached_hour
from marts.fct_quota_usage
where billing_period_start >= ? and billing_period_start < ?
order by subscription_id, limit_id
"""


def spend_controls_summary(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime):
    """Lines for the month [start, end)."""
    out = []
    for cur, customers, revenue, cost in con.execute(COST_PLUS_SQL, [start, end]).fetchall():
        out.append(
            f"  cost-plus prices: {customers} customer(s), {cur} revenue {revenue:,.6f} on "
            f"provider cost (USD) {cost:,.6f}"
        )
    for sub, cur, cap, charged, forgiven, hour in con.execute(CAPS_SQL, [start, end]).fetchall():
        out.append(
            f"  spend cap: {sub} capped at {cur} {cap:,.2f} from {hour:%Y-%m-%d %H:00}: "
            f"charged {charged:,.6f}, forgiven {forgiven:,.6f}"
        )
    for sub, limit, kind, metric, used, cap, hour in con.execute(
        QUOTAS_SQL, [start, end]
    ).fetchall():
        reached = f"reached {hour:%Y-%m-%d %H:00}" if hour else "not reached"
        out.append(
            f"  quota: {sub} {limit} ({kind}, {metric}) {used.normalize():,f} of "
            f"{cap.normalize():,f}, {reached}"
        )
    as_of = as_of_hour(con, None)
    blocked = blocked_entries(con, as_of)
    who = ", ".join(f"{e['customer_id']} ({e['reason']})" for e in blocked) or "nobody"
    out.append(f"  enforcement file as of {as_of:%Y-%m-%d %H:00}: {len(blocked)} blocked: {who}")
    return out
