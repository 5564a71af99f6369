{{ config(schema='marts', materialized=view_materialization(), tags=['monthly']) }}

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
-- - low_runway: a wallet's runway (fct_wallet_runway) falls below its low_runway_days at a
--   day's end, from not low the day before (each fall counts, as for low_balance).
-- - usage_spike: an hour or day of fct_usage_spikes (tokens or billed amount above factor x
--   the trailing baseline, per customer or per customer and model).
-- alert_id = alert_type|source_id|threshold (shortest exact form), built from the alert's own facts only (never a
-- row number or a run time), so it is the same in every rebuild: the alerts feed
-- (orchestration/defs/alerts) exports each id once. Every branch lists the same columns in the
-- same order (null where it has no value: model, baseline, ...): DuckDB unions them by name,
-- Spark by position (macros/portable/sql.sql).

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
        cast(null as {{ string_type() }}) as subscription_id,
        cast(null as {{ string_type() }}) as price_id,
        cast(null as {{ string_type() }}) as model,
        ordered.currency,
        ordered.billing_period_start,
        date_trunc('hour', ordered.entry_ts) as alert_hour,
        ordered.entry_ts as alerted_at,
        thresholds.threshold,
        ordered.wallet_balance_after as value_after,
        cast(null as decimal(38, 18)) as baseline,
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
        cast(null as {{ string_type() }}) as wallet_id,
        usage.subscription_id,
        usage.price_id,
        cast(null as {{ string_type() }}) as model,
        usage.currency,
        usage.billing_period_start,
        min(usage.usage_hour) as alert_hour,
        min(usage.usage_hour) as alerted_at,
        cast(usage.included_tokens as decimal(20, 0)) * pct.fraction as threshold,
        min(usage.period_quantity_after) as value_after,
        cast(null as decimal(38, 18)) as baseline,
        usage.subscription_id || '|' || usage.price_id || '|'
        || {{ format_timestamp('usage.billing_period_start', '%Y-%m-%d') }} as source_id
    from usage
    cross join (values (80, 0.80), (100, 1.00)) as pct (percent, fraction)
    where
        usage.period_quantity_before * 100 < usage.included_tokens * pct.percent
        and usage.period_quantity_after * 100 >= usage.included_tokens * pct.percent
    group by all

),

quota_hours as (

    select *, {{ unnest_list('alert_percents') }} as percent
    from {{ ref('int_quota__usage_hourly') }}

),

quota as (

    select
        'quota' as alert_type,
        customer_id,
        cast(null as {{ string_type() }}) as wallet_id,
        subscription_id,
        cast(null as {{ string_type() }}) as price_id,
        cast(null as {{ string_type() }}) as model,
        currency,
        billing_period_start,
        min(usage_hour) as alert_hour,
        min(usage_hour) as alerted_at,
        {{ prorate('max_value', 'percent', 100) }} as threshold,
        min_by(used_through, usage_hour) as value_after,
        cast(null as decimal(38, 18)) as baseline,
        subscription_id || '|' || limit_id || '|'
        || {{ format_timestamp('billing_period_start', '%Y-%m-%d') }} as source_id
    from quota_hours
    where
        (used_through - used_in_hour) * 100 < max_value * percent
        and used_through * 100 >= max_value * percent
    group by all

),

runway as (

    select
        *,
        lag(is_low_runway) over (partition by wallet_id order by balance_date)
            as was_low_runway
    from {{ ref('fct_wallet_runway') }}

),

periods as (

    select wallet_id, valid_from, valid_to, billing_period_start
    from {{ ref('int_wallets__draw_inputs') }}
    where input_type = 'period'

),

low_runway as (

    select
        'low_runway' as alert_type,
        runway.customer_id,
        runway.wallet_id,
        cast(null as {{ string_type() }}) as subscription_id,
        cast(null as {{ string_type() }}) as price_id,
        cast(null as {{ string_type() }}) as model,
        runway.currency,
        coalesce(
            periods.billing_period_start,
            {{ dbt.date_trunc('month', 'runway.balance_date') }}
        ) as billing_period_start,
        cast(runway.balance_date as timestamp) + interval 23 hour as alert_hour,
        cast(runway.balance_date as timestamp) + interval 1 day as alerted_at,
        runway.low_runway_days as threshold,
        runway.runway_days as value_after,
        runway.daily_burn_rate as baseline,
        runway.wallet_id || '|' || {{ format_timestamp('runway.balance_date', '%Y-%m-%d') }} as source_id
    from runway
    left join periods
        on
            runway.wallet_id = periods.wallet_id
            and cast(runway.balance_date as timestamp) + interval 23 hour >= periods.valid_from
            and cast(runway.balance_date as timestamp) + interval 23 hour < periods.valid_to
    where runway.is_low_runway and not coalesce(runway.was_low_runway, false)

),

usage_spike as (

    select
        'usage_spike' as alert_type,
        customer_id,
        cast(null as {{ string_type() }}) as wallet_id,
        cast(null as {{ string_type() }}) as subscription_id,
        cast(null as {{ string_type() }}) as price_id,
        model,
        currency,
        billing_period_start,
        {{ dbt.date_trunc('hour', 'period_start') }} as alert_hour,
        period_start as alerted_at,
        factor as threshold,
        value as value_after,
        baseline,
        grain || '|' || metric || '|' || customer_id || '|' || coalesce(model, '*') || '|'
        || {{ format_timestamp('period_start', '%Y-%m-%dT%H') }} as source_id
    from {{ ref('fct_usage_spikes') }}

),

alerts as (

    select * from low_balance
    {{ union_all_by_name() }}
    select * from allowance
    {{ union_all_by_name() }}
    select * from quota
    {{ union_all_by_name() }}
    select * from low_runway
    {{ union_all_by_name() }}
    select * from usage_spike

)

select
    -- The threshold in its shortest exact form (3, 17.5): the same text whatever decimal
    -- scale the union gives the column.
    alert_type || '|' || source_id || '|'
    || regexp_replace(
        regexp_replace(cast(cast(threshold as decimal(38, 18)) as {{ string_type() }}), '0+$', ''), '[.]$', ''
    ) as alert_id,
    alert_type,
    customer_id,
    wallet_id,
    subscription_id,
    price_id,
    model,
    currency,
    cast(billing_period_start as timestamp) as billing_period_start,
    cast(alert_hour as timestamp) as alert_hour,
    cast(alerted_at as timestamp) as alerted_at,
    cast(threshold as decimal(38, 18)) as threshold,
    cast(value_after as decimal(38, 18)) as value_after,
    cast(baseline as decimal(38, 18)) as baseline
from alerts
