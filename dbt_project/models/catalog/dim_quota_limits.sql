-- One row per subscription and quota limit in force for it: the plan's limits, plus the
-- customer override's; an override limit with the limit_id of a plan limit replaces it.

with

subscriptions as (

    select * from {{ ref('dim_subscriptions') }}

),

limits as (

    select * from {{ source('catalog', 'quota_limits') }}

),

candidates as (

    select
        subscriptions.subscription_id,
        subscriptions.customer_id,
        subscriptions.plan_id,
        subscriptions.currency,
        limits.scope,
        limits.limit_id,
        limits.metric,
        limits.max_value,
        limits.enforcement,
        limits.selector_model,
        limits.model_like,
        limits.feature,
        limits.alert_percents,
        row_number() over (
            partition by subscriptions.subscription_id, limits.limit_id
            order by case limits.scope when 'customer' then 0 else 1 end
        ) as precedence
    from subscriptions
    inner join limits
        on
            (limits.scope = 'plan' and subscriptions.plan_id = limits.plan_id)
            or (limits.scope = 'customer' and subscriptions.customer_id = limits.customer_id)

)

select {{ star_except(['precedence']) }}
from candidates
where precedence = 1
