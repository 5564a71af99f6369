{{ config(schema='marts', materialized='view', tags=['monthly']) }}

-- Billing alerts with the hour they happened:
-- - low_balance: a ledger entry takes a wallet's balance from >= a threshold of
--   catalog.wallet_alerts to below it. Each crossing counts: after a grant, top-up or
--   reversal lifts the balance back above the threshold, falling below it again is a new
--   alert. This model is the one place low-balance crossings are decided.
-- - allowance_80 / allowance_100: a subscription's period-to-date billable quantity of a
--   price with an included allowance reaches 80% / 100% of it within a billing period.
-- - quota: a quota limit's period-to-date usage (int_quota__usage_hourly) reaches one of the
--   limit's alert_at percentages of its max within a billing period (once per period and
--   percentage; threshold = max x percentage; the alert id names the limit:
--   quota|subscription|limit|period|threshold).

with

ledger as (

    select * from {{ ref('fct_wallet_ledger') }}

),

thresholds as (

    select * from {{ source('wallet_catalog', 'wallet_alerts') }}

),

ordered as (

    select
        *,
        coalesce(
            lag(wallet_balance_after) over (
                partition by wallet_id
                order by entry_ts, entry_order
            ),
            0
        ) as balance_before
    from ledger

),

low_balance as (

    select
        'low_balance' as alert_type,
        ordered.customer_id,
        ordered.wallet_id,
        cast(null as varchar) as subscription_id,
        cast(null as varchar) as price_id,
        ordered.currency,
        ordered.billing_period_start,
        date_trunc('hour', ordered.entry_ts) as alert_hour,
        ordered.entry_ts as alerted_at,
        thresholds.threshold,
        ordered.wallet_balance_after as value_after,
        ordered.entry_id as source_id
    from ordered
    inner join thresholds on ordered.wallet_id = thresholds.wallet_id
    where
        ordered.balance_before >= thresholds.threshold
        and ordered.wallet_balance_after < thresholds.threshold

),

allowances as (

    select distinct price_id, included_tokens
    from {{ ref('dim_prices') }}
    where included_tokens > 0

),

usage as (

    select
        rated.customer_id,
        rated.subscription_id,
        rated.price_id,
        rated.currency,
        rated.billing_period_start,
        rated.usage_hour,
        rated.period_quantity_before,
        rated.period_quantity_before + rated.billable_quantity as period_quantity_after,
        allowances.included_tokens
    from {{ ref('fct_rated_charges_hourly') }} as rated
    inner join allowances on rated.price_id = allowances.price_id

),

allowance as (

    select
        'allowance_' || pct.percent as alert_type,
        usage.customer_id,
        cast(null as varchar) as wallet_id,
        usage.subscription_id,
        usage.price_id,
        usage.currency,
        usage.billing_period_start,
        min(usage.usage_hour) as alert_hour,
        min(usage.usage_hour) as alerted_at,
        cast(usage.included_tokens as decimal(20, 0)) * pct.fraction as threshold,
        min(usage.period_quantity_after) as value_after,
        usage.subscription_id || '|' || usage.price_id || '|'
        || strftime(usage.billing_period_start, '%Y-%m-%d') as source_id
    from usage
    cross join (values (80, 0.80), (100, 1.00)) as pct (percent, fraction)
    where
        usage.period_quantity_before * 100 < usage.included_tokens * pct.percent
        and usage.period_quantity_after * 100 >= usage.included_tokens * pct.percent
    group by all

),

quota_hours as (

    select *, unnest(alert_percents) as percent
    from {{ ref('int_quota__usage_hourly') }}

),

quota as (

    select
        'quota' as alert_type,
        customer_id,
        cast(null as varchar) as wallet_id,
        subscription_id,
        cast(null as varchar) as price_id,
        currency,
        billing_period_start,
        min(usage_hour) as alert_hour,
        min(usage_hour) as alerted_at,
        {{ prorate('max_value', 'percent', 100) }} as threshold,
        arg_min(used_through, usage_hour) as value_after,
        subscription_id || '|' || limit_id || '|' || strftime(billing_period_start, '%Y-%m-%d')
            as source_id
    from quota_hours
    where
        (used_through - used_in_hour) * 100 < max_value * percent
        and used_through * 100 >= max_value * percent
    group by all

),

alerts as (

    select * from low_balance
    union all
    select * from allowance
    union all
    select * from quota

)

select
    alert_type || '|' || source_id || '|' || cast(threshold as varchar) as alert_id,
    alert_type,
    customer_id,
    wallet_id,
    subscription_id,
    price_id,
    currency,
    cast(billing_period_start as timestamp) as billing_period_start,
    cast(alert_hour as timestamp) as alert_hour,
    cast(alerted_at as timestamp) as alerted_at,
    cast(threshold as decimal(38, 18)) as threshold,
    cast(value_after as decimal(38, 18)) as value_after
from alerts
