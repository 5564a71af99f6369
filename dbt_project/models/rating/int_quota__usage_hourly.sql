{{ config(materialized='ephemeral') }}

-- Per subscription, quota limit (dim_quota_limits), billing period and hour with usage: what
-- the hour counted toward the limit and the period's running total through it. The one place
-- quota usage is counted (fct_quota_usage and the quota alerts of fct_billing_alerts read it).
-- tokens = total_tokens (input + output: uncached, cached and cache-write input, and output with
-- its reasoning), requests = attempts (events), both from fct_token_usage_hourly, every status
-- (the gateway served them); spend = the rated charges after spend caps.

with

limits as (

    select * from {{ ref('dim_quota_limits') }}

),

subscriptions as (

    select * from {{ ref('dim_subscriptions') }}
    where subscription_id in (select subscription_id from limits)

),

token_hours as (

    select
        subscriptions.subscription_id,
        {{ billing_period_start('usage.usage_hour', 'subscriptions.billing_anchor_day') }}
            as billing_period_start,
        usage.usage_hour,
        usage.model,
        usage.feature,
        sum(usage.total_tokens) as tokens,
        sum(usage.event_count) as requests,
        cast(0 as decimal(38, 18)) as spend
    from {{ ref('fct_token_usage_hourly') }} as usage
    inner join subscriptions
        on
            usage.customer_id = subscriptions.customer_id
            and usage.usage_hour >= subscriptions.starts_at
            and usage.usage_hour < coalesce(subscriptions.ends_at, {{ infinity_timestamp() }})
    group by all

),

spend_hours as (

    select
        subscription_id,
        billing_period_start,
        usage_hour,
        model,
        feature,
        cast(0 as {{ sum_of_bigint_type() }}) as tokens,
        cast(0 as {{ sum_of_bigint_type() }}) as requests,
        sum(amount) as spend
    from {{ ref('fct_rated_charges_hourly') }}
    where subscription_id in (select subscription_id from limits)
    group by all

),

usage_hours as (

    select * from token_hours
    union all
    select * from spend_hours

),

counted as (

    select
        limits.subscription_id,
        limits.limit_id,
        usage_hours.billing_period_start,
        usage_hours.usage_hour,
        sum(
            case limits.metric
                when 'tokens' then cast(usage_hours.tokens as decimal(38, 18))
                when 'requests' then cast(usage_hours.requests as decimal(38, 18))
                else usage_hours.spend
            end
        ) as used_in_hour
    from limits
    inner join usage_hours
        on
            limits.subscription_id = usage_hours.subscription_id
            and coalesce(usage_hours.model like limits.model_like escape {{ like_escape() }}, limits.model_like is null)
            and coalesce(usage_hours.feature = limits.feature, limits.feature is null)
    group by all

)

select
    limits.*,
    counted.billing_period_start,
    counted.usage_hour,
    counted.used_in_hour,
    sum(counted.used_in_hour) over (
        partition by counted.subscription_id, counted.limit_id, counted.billing_period_start
        order by counted.usage_hour
        rows between unbounded preceding and current row
    ) as used_through
from counted
inner join limits
    on counted.subscription_id = limits.subscription_id and counted.limit_id = limits.limit_id
where counted.used_in_hour <> 0
