{{
    config(
        tags=["hourly"],
        pre_hook="{{ delete_window('usage_hour') }}",
    )
}}

-- The charge of each usage row is F(period quantity through it) - F(period quantity before
-- it), F being the price's period amount function after the included allowance. Summed over
-- a period, hourly charges equal F(period quantity) exactly; a volume tier crossed mid-period
-- gives a negative correction, by design. A cost-plus price is not a function of quantity: its
-- charge is the row's provider cost x (1 + markup), at least its floor. No rounding happens here.

with

priced as (

    select * from {{ ref('int_rating__priced_usage') }}
    where unpriced_reason is null and {{ in_window('usage_hour') }}

),

-- Each price version's tiers as one list: every usage row computes its tiered amount from
-- the list of its price (a few tiers), with no join of rows to tiers and back.
tier_lists as (

    select
        price_id,
        price_version,
        {{ struct_list(['lower_tokens', 'upper_tokens', 'unit_price_per_token', 'flat_fee']) }}
            as tiers
    from {{ ref('dim_price_tiers') }}
    group by all

),

bounds as (

    select
        priced.*,
        tier_lists.tiers,
        greatest(priced.period_quantity_before - priced.included_tokens, 0) as chargeable_before,
        greatest(priced.period_quantity_before + priced.billable_quantity - priced.included_tokens, 0)
            as chargeable_through
    from priced
    left join tier_lists
        on priced.price_id = tier_lists.price_id and priced.price_version = tier_lists.price_version

),

charged as {{ materialized_cte() }} (

    select
        bounds.*,
        case
            when bounds.pricing_model = 'package' and bounds.package_rounding = 'up'
                then (
                    {{ int_div('bounds.chargeable_through', 'bounds.package_size_tokens', 'up') }}
                    - {{ int_div('bounds.chargeable_before', 'bounds.package_size_tokens', 'up') }}
                ) * bounds.package_price
            when bounds.pricing_model = 'package'
                then (
                    {{ int_div('bounds.chargeable_through', 'bounds.package_size_tokens') }}
                    - {{ int_div('bounds.chargeable_before', 'bounds.package_size_tokens') }}
                ) * bounds.package_price
            -- Cost-plus: the row's provider cost marked up, at least the floor per token;
            -- exact (the markup has at most 4 decimals). Unbilled failed attempts charge 0.
            when bounds.pricing_model = 'cost_plus' and bounds.billable_quantity = 0 then 0
            when bounds.pricing_model = 'cost_plus'
                then greatest(
                    bounds.provider_cost
                    + bounds.provider_cost * cast(bounds.markup as decimal(18, 4)),
                    bounds.billable_quantity * coalesce(bounds.floor_per_token, 0)
                )
            when bounds.pricing_model = 'volume'
                then coalesce({{ list_sum_over('bounds.tiers', 'tier',
                    volume_value('bounds.chargeable_through', 'tier')
                    ~ ' - ' ~ volume_value('bounds.chargeable_before', 'tier')) }}, 0)
            else coalesce({{ list_sum_over('bounds.tiers', 'tier',
                graduated_amount('bounds.chargeable_before', 'bounds.chargeable_through', 'tier')) }}, 0)
        end as uncapped_amount
    from bounds

),

-- Spend caps (dim_spend_caps): per billing period, a price's charges stop at its max_spend,
-- then the subscription's (price-capped) charges stop at the subscription's. Capping is a
-- running sum in a total order (hour, then price and the row's dimensions): each row is
-- charged least(before + own, cap) - least(before, cap), so the period's charges are exactly
-- least(uncapped total, cap) and the row that crosses the cap is charged only up to it. The
-- hours of the period before the window are read back from this model (their uncapped
-- amounts): the rerate sensor rebuilds the later hours of a period in order, as for tiers.
caps as (

    select * from {{ ref('dim_spend_caps') }}

),

capped_subscriptions as (

    select distinct subscription_id from caps

),

earlier as (

    {% if is_incremental() %}
    select
        earlier.subscription_id,
        earlier.billing_period_start,
        earlier.price_id,
        sum(earlier.uncapped_amount) as uncapped_before
    from {{ this }} as earlier
    where
        earlier.usage_hour < {{ window_start() }}
        and earlier.usage_hour >= {{ dbt.dateadd('day', -32, window_start()) }}
        and earlier.subscription_id in (select subscription_id from capped_subscriptions)
    group by all
    {% else %}
    select
        cast(null as {{ string_type() }}) as subscription_id,
        cast(null as timestamp) as billing_period_start,
        cast(null as {{ string_type() }}) as price_id,
        cast(null as decimal(38, 18)) as uncapped_before
    where false
    {% endif %}

),

earlier_capped as (

    select
        earlier.subscription_id,
        earlier.billing_period_start,
        earlier.price_id,
        earlier.uncapped_before,
        case
            when price_caps.max_spend is null then earlier.uncapped_before
            else least(earlier.uncapped_before, price_caps.max_spend)
        end as price_capped_before
    from earlier
    left join caps as price_caps
        on
            earlier.subscription_id = price_caps.subscription_id
            and earlier.price_id = price_caps.price_id

),

to_cap as (

    select
        charged.*,
        price_caps.max_spend as price_cap,
        subscription_caps.max_spend as subscription_cap,
        coalesce(earlier_capped.uncapped_before, 0)
        + coalesce(sum(charged.uncapped_amount) over (
            partition by charged.subscription_id, charged.billing_period_start, charged.price_id
            -- nulls last as in int_rating__priced_usage (Spark's default is nulls first).
            order by
                charged.usage_hour, charged.provider nulls last, charged.model nulls last,
                charged.feature nulls last, charged.environment nulls last,
                charged.status nulls last
            rows between unbounded preceding and 1 preceding
        ), 0) as price_before
    from charged
    left join caps as price_caps
        on
            charged.subscription_id = price_caps.subscription_id
            and charged.price_id = price_caps.price_id
    left join caps as subscription_caps
        on
            charged.subscription_id = subscription_caps.subscription_id
            and subscription_caps.price_id is null
    left join earlier_capped
        on
            charged.subscription_id = earlier_capped.subscription_id
            and charged.billing_period_start = earlier_capped.billing_period_start
            and charged.price_id = earlier_capped.price_id
    where charged.subscription_id in (select subscription_id from capped_subscriptions)

),

price_capped as (

    select
        *,
        case
            when price_cap is null then uncapped_amount
            else least(price_before + uncapped_amount, price_cap) - least(price_before, price_cap)
        end as price_capped_amount
    from to_cap

),

subscription_before as (

    select subscription_id, billing_period_start, sum(price_capped_before) as capped_before
    from earlier_capped
    group by all

),

subscription_running as (

    select
        price_capped.*,
        coalesce(subscription_before.capped_before, 0)
        + coalesce(sum(price_capped.price_capped_amount) over (
            partition by price_capped.subscription_id, price_capped.billing_period_start
            order by
                price_capped.usage_hour, price_capped.price_id, price_capped.provider nulls last,
                price_capped.model nulls last, price_capped.feature nulls last,
                price_capped.environment nulls last, price_capped.status nulls last
            rows between unbounded preceding and 1 preceding
        ), 0) as subscription_before
    from price_capped
    left join subscription_before
        on
            price_capped.subscription_id = subscription_before.subscription_id
            and price_capped.billing_period_start = subscription_before.billing_period_start

),

subscription_capped as (

    select
        {{ star_except([
            'price_cap', 'subscription_cap', 'price_before', 'price_capped_amount',
            'subscription_before',
        ]) }},
        case
            when subscription_cap is null then price_capped_amount
            else
                least(subscription_before + price_capped_amount, subscription_cap)
                - least(subscription_before, subscription_cap)
        end as amount
    from subscription_running

),

final as (

    select charged.*, charged.uncapped_amount as amount
    from charged
    where charged.subscription_id not in (select subscription_id from capped_subscriptions)
    -- Both branches: charged's columns, then amount (Spark's union is positional).
    {{ union_all_by_name() }}
    select * from subscription_capped

)

select
    -- period
    final.usage_hour,
    cast(final.billing_period_start as timestamp) as billing_period_start,

    -- who and what
    final.customer_id,
    final.subscription_id,
    final.plan_id,
    final.price_id,
    cast(final.price_version as integer) as price_version,
    final.meter,
    final.provider,
    final.model,
    final.feature,
    final.environment,
    final.status,

    -- measures
    cast(final.quantity as bigint) as quantity,
    cast(final.billable_quantity as bigint) as billable_quantity,
    cast(final.period_quantity_before as bigint) as period_quantity_before,
    cast(final.amount as decimal(38, 18)) as amount,
    final.currency,
    cast(final.provider_cost as decimal(38, 18)) as provider_cost,
    final.has_provider_cost,
    cast(final.uncapped_amount as decimal(38, 18)) as uncapped_amount,
    cast(final.uncapped_amount - final.amount as decimal(38, 18)) as forgiven_amount
from final
