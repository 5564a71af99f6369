{{ config(materialized='view', tags=['hourly']) }}

-- One row per subscription, quota limit and billing period with usage: used so far, what
-- remains, and the hour the limit was reached (the first hour whose running total is at or
-- above it). A view over the hourly marts: current after every hourly run.

with

hourly as (

    select * from {{ ref('int_quota__usage_hourly') }}

),

periods as (

    select
        subscription_id,
        customer_id,
        limit_id,
        metric,
        enforcement,
        selector_model,
        feature,
        currency,
        billing_period_start,
        max_value,
        max_by(used_through, usage_hour) as used,
        min(case when used_through >= max_value then usage_hour end) as reached_hour,
        max(usage_hour) as last_usage_hour
    from hourly
    group by
        subscription_id, customer_id, limit_id, metric, enforcement, selector_model, feature,
        currency, billing_period_start, max_value

)

select
    subscription_id,
    customer_id,
    limit_id,
    metric,
    enforcement,
    selector_model as model,
    feature,
    currency,
    cast(billing_period_start as timestamp) as billing_period_start,
    cast({{ dbt.dateadd('month', 1, 'billing_period_start') }} as timestamp) as billing_period_end,
    cast(max_value as decimal(38, 18)) as max_value,
    cast(used as decimal(38, 18)) as used,
    cast(greatest(max_value - used, 0) as decimal(38, 18)) as remaining,
    used >= max_value as is_reached,
    cast(reached_hour as timestamp) as reached_hour,
    cast(last_usage_hour as timestamp) as last_usage_hour
from periods
