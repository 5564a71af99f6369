{{ config(materialized='ephemeral') }}

-- Usage split into meters, each row matched to its subscription and to the one price that
-- rates it, with its period-to-date quantity. Reads the 31 days before the window too: tiers,
-- packages and allowances apply to the quantity of the whole billing period so far.

{% set meters = {
    'uncached_input': 'uncached_input_tokens',
    'cached_input': 'cached_input_tokens',
    'cache_write': 'cache_write_tokens',
    'output': 'output_tokens',
    'reasoning': 'reasoning_tokens',
    'requests': 'event_count',
} %}
{% set usage_key = 'usage_hour, customer_id, provider, model, feature, environment, status, meter' %}

with

usage as (

    select * from {{ ref('fct_token_usage_hourly') }}
    where
        usage_hour >= {{ dbt.dateadd('day', -31, window_start()) }}
        and usage_hour < {{ window_end() }}

),

subscriptions as (

    select * from {{ ref('dim_subscriptions') }}

),

plans as (

    select * from {{ ref('dim_plans') }}

),

prices as (

    select * from {{ ref('dim_prices') }}

),

metered as (

    {% for meter, column in meters.items() %}
    select
        usage_hour, customer_id, provider, model, feature, environment, status,
        '{{ meter }}' as meter,
        sum({{ column }}) as quantity
    from usage
    where {{ column }} > 0
    group by all
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

-- The catalog is the authority on subscriptions (at most one active per customer); the
-- subscription id an event carries is informational.
subscribed as (

    select
        metered.*,
        subscriptions.subscription_id,
        subscriptions.plan_id,
        subscriptions.currency,
        plans.bill_failed_attempts,
        {{ billing_period_start('metered.usage_hour', 'subscriptions.billing_anchor_day') }}
            as billing_period_start
    from metered
    left join subscriptions
        on
            metered.customer_id = subscriptions.customer_id
            and metered.usage_hour >= subscriptions.starts_at
            and (subscriptions.ends_at is null or metered.usage_hour < subscriptions.ends_at)
    left join plans on subscriptions.plan_id = plans.plan_id

),

matched as (

    select
        subscribed.*,
        prices.price_id,
        prices.price_version,
        prices.specificity,
        prices.pricing_model,
        prices.included_tokens,
        prices.package_size_tokens,
        prices.package_rounding,
        prices.package_price
    from subscribed
    left join prices
        on
            subscribed.meter = prices.meter
            and (
                (prices.scope = 'plan' and prices.plan_id = subscribed.plan_id)
                or (prices.scope = 'customer' and prices.customer_id = subscribed.customer_id)
            )
            and subscribed.model like prices.model_like escape '\'
            and (prices.provider is null or prices.provider = subscribed.provider)
            and (prices.feature is null or prices.feature = subscribed.feature)
            and (prices.environment is null or prices.environment = subscribed.environment)
            and subscribed.usage_hour >= prices.effective_from
            and (prices.effective_to is null or subscribed.usage_hour < prices.effective_to)

),

candidates as (

    select
        *,
        max(specificity) over (partition by {{ usage_key }}) as top_specificity
    from matched

),

best as (

    select
        * exclude (top_specificity),
        count(price_id) over (partition by {{ usage_key }}) as top_candidates,
        array_to_string(list_sort(list(price_id) over (partition by {{ usage_key }})), ',')
            as top_price_ids
    from candidates
    where specificity = top_specificity or price_id is null

),

resolved as (

    select
        * exclude (top_price_ids),
        case
            when subscription_id is null then 'no_active_subscription'
            when price_id is null then 'no_matching_price'
            when top_candidates > 1 then 'ambiguous_price'
        end as unpriced_reason,
        case when top_candidates > 1 then top_price_ids end as ambiguous_price_ids,
        case
            when status = 'success' or bill_failed_attempts then quantity else 0
        end as billable_quantity
    from best
    qualify row_number() over (partition by {{ usage_key }} order by price_id) = 1

)

select
    *,
    -- Period-to-date quantity of the (subscription, price) before this row, in a total order
    -- (hour, then the row's dimensions): hourly charges then sum exactly to the period amount.
    coalesce(sum(case when unpriced_reason is null then billable_quantity end) over (
        partition by subscription_id, price_id, billing_period_start
        order by usage_hour, provider, model, feature, environment, status
        rows between unbounded preceding and 1 preceding
    ), 0) as period_quantity_before
from resolved
