{{
    config(
        tags=["monthly"],
        pre_hook="{{ delete_window('billing_period_start') }}",
    )
}}

-- The period-level charges of each subscription: the recurring platform fee, prorated by time
-- when the subscription starts or ends inside the billing period, and the minimum-spend
-- true-up (the prorated minimum less the period's usage charges, when positive). A billing
-- period belongs to the monthly partition in which it starts. The true-up is final once the
-- period has ended and its usage is rated (the monthly close runs after the grace period).

with

subscriptions as (

    select * from {{ ref('dim_subscriptions') }}

),

plans as (

    select * from {{ ref('dim_plans') }}

),

first_period as (

    select
        subscriptions.*,
        {{ billing_period_start(window_start(), 'subscriptions.billing_anchor_day') }}
            as period_containing_start
    from subscriptions

),

periods as (

    select
        *,
        case
            when period_containing_start < {{ window_start() }}
                then {{ dbt.dateadd('month', 1, 'period_containing_start') }}
            else period_containing_start
        end as billing_period_start
    from first_period

),

bounded as (

    select
        periods.subscription_id,
        periods.customer_id,
        periods.plan_id,
        periods.currency,
        cast(periods.billing_period_start as timestamp) as billing_period_start,
        cast({{ dbt.dateadd('month', 1, 'periods.billing_period_start') }} as timestamp)
            as billing_period_end,
        greatest(periods.starts_at, periods.billing_period_start) as active_from,
        least(
            coalesce(periods.ends_at, {{ dbt.dateadd('month', 1, 'periods.billing_period_start') }}),
            {{ dbt.dateadd('month', 1, 'periods.billing_period_start') }}
        ) as active_to,
        plans.platform_fee,
        plans.minimum_spend
    from periods
    inner join plans on periods.plan_id = plans.plan_id
    where periods.billing_period_start < {{ window_end() }}

),

active as (

    select
        *,
        {{ dbt.datediff('active_from', 'active_to', 'second') }} as active_seconds,
        {{ dbt.datediff('billing_period_start', 'billing_period_end', 'second') }} as period_seconds
    from bounded
    where active_to > active_from

),

usage as (

    select
        subscription_id,
        billing_period_start,
        sum(amount) as usage_amount
    from {{ ref('fct_rated_charges_hourly') }}
    where
        usage_hour >= {{ window_start() }}
        and usage_hour < {{ dbt.dateadd('month', 1, window_end()) }}
    group by all

),

currencies as (

    select * from {{ source('catalog', 'currencies') }}

),

-- The prorated fee and minimum are amounts charged as such, so they are rounded to the
-- currency's minor unit (half away from zero) here, once: a customer under the minimum pays
-- exactly the prorated minimum shown on the invoice.
fees as (

    select
        active.*,
        {{ round_to_minor_unit(
            prorate('active.platform_fee', 'active.active_seconds', 'active.period_seconds'),
            'currencies.minor_unit_exponent') }} as platform_fee_amount,
        {{ round_to_minor_unit(
            prorate('active.minimum_spend', 'active.active_seconds', 'active.period_seconds'),
            'currencies.minor_unit_exponent') }} as minimum_spend_amount,
        coalesce(usage.usage_amount, 0) as usage_amount
    from active
    inner join currencies on active.currency = currencies.currency
    left join usage
        on
            active.subscription_id = usage.subscription_id
            and active.billing_period_start = usage.billing_period_start

)

select
    billing_period_start,
    billing_period_end,
    customer_id,
    subscription_id,
    plan_id,
    currency,
    active_from,
    active_to,
    cast(active_seconds as bigint) as active_seconds,
    cast(period_seconds as bigint) as period_seconds,
    cast(platform_fee as decimal(38, 18)) as platform_fee,
    platform_fee_amount,
    minimum_spend_amount,
    cast(usage_amount as decimal(38, 18)) as usage_amount,
    cast(greatest(minimum_spend_amount - usage_amount, 0) as decimal(38, 18))
        as minimum_spend_true_up
from fees
