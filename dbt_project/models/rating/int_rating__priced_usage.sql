{{
    config(
        tags=["hourly"],
        pre_hook="{{ delete_window('usage_hour') }}",
    )
}}

-- Usage split into meters, each row matched to its subscription and to the one price that
-- rates it, with its period-to-date quantity. Reads the 31 days before the window too: tiers,
-- packages and allowances apply to the quantity of the whole billing period so far.
-- Materialised once per window (the window's rows only: delete, then insert, as the hourly
-- marts do), and read by both fct_rated_charges_hourly and fct_unpriced_usage (issue #13).

{% set meters = {
    'uncached_input': 'uncached_input_tokens',
    'cached_input': 'cached_input_tokens',
    'cache_write': 'cache_write_tokens',
    'output': 'output_tokens',
    'reasoning': 'reasoning_tokens',
    'requests': 'event_count',
    'cache_write_5m': 'cache_write_5m_tokens',
    'cache_write_1h': 'cache_write_1h_tokens',
    'audio_input': 'audio_input_tokens',
    'image_input': 'image_input_tokens',
    'audio_output': 'audio_output_tokens',
    'image_output': 'image_output_tokens',
} %}
{#- The subset meters after requests (cache writes by TTL, audio and image tokens; issue #14)
    are surcharges on tokens already metered by their parent meter, like reasoning: a catalog
    prices them only to charge a modality or a TTL differently. Their provider cost is inside
    the parent meter's (0 here). -#}

with

usage as (

    select * from {{ ref('fct_token_usage_hourly') }}
    where
        usage_hour >= {{ dbt.dateadd('day', -31, window_start()) }}
        and usage_hour < {{ window_end() }}

),

card as (

    select * from {{ ref('dim_provider_costs') }}

),

-- Every name a card row answers to (its model and its aliases), for an equality join. The
-- catalog load guarantees one row version per provider and name at any moment, so the join
-- never duplicates a usage row.
card_names as (

    select card.*, card.model as card_name from card
    union all
    select card.*, {{ unnest_list('card.aliases') }} as card_name from card

),

-- What the usage cost us at the providers' list prices, per meter. A call whose prompt
-- exceeds 200k tokens is priced whole at the long-context rates: the hourly mart keeps those
-- calls' tokens apart (long_context_*), so the cost is exact from it (sums of products equal
-- products of sums in exact decimals, and the card's versions start on whole days, so an hour
-- has one card version). Reasoning is inside output; requests cost nothing. Usage the card
-- does not name (or without a provider) has no card row: its cost is unknown, null.
costed as (

    select
        usage.*,
        card.model is not null as has_card,
        (usage.uncached_input_tokens - usage.long_context_uncached_input_tokens)
        * card.input_per_token
        + usage.long_context_uncached_input_tokens * card.input_above_200k_per_token
            as uncached_input_cost,
        (usage.cached_input_tokens - usage.long_context_cached_input_tokens)
        * card.cache_read_per_token
        + usage.long_context_cached_input_tokens * card.cache_read_above_200k_per_token
            as cached_input_cost,
        (usage.cache_write_tokens - usage.long_context_cache_write_tokens)
        * card.cache_write_per_token
        + usage.long_context_cache_write_tokens * card.cache_write_above_200k_per_token
            as cache_write_cost,
        (
            usage.output_tokens - usage.reasoning_tokens
            - (usage.long_context_output_tokens - usage.long_context_reasoning_tokens)
        ) * card.output_per_token
        + (usage.long_context_output_tokens - usage.long_context_reasoning_tokens)
        * card.output_above_200k_per_token
        + usage.reasoning_tokens * card.reasoning_per_token as output_cost
    from usage
    -- Only the window's rows are costed: the lookback rows are there for period-to-date
    -- quantities, and only the window's rows are kept.
    left join card_names as card
        on
            {{ in_window('usage.usage_hour') }}
            and usage.provider = card.provider
            and usage.model = card.card_name
            and usage.usage_hour >= card.effective_from
            and usage.usage_hour < coalesce(card.effective_to, {{ infinity_timestamp() }})

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
        sum({{ column }}) as quantity,
        -- Null, not 0, where the card has no price for the model: the cost is unknown. The
        -- reasoning and requests meters cost 0 where it has one (reasoning is costed inside
        -- output, requests are free; so are the TTL and modality subsets inside their
        -- parents), and are unknown with the rest of the model where not.
        case when bool_and(has_card) then
            {% if meter in ('uncached_input', 'cached_input', 'cache_write', 'output') %}
            sum({{ meter }}_cost)
            {% else %}
            0
            {% endif %}
        end as provider_cost,
        bool_and(has_card) as has_provider_cost
    from costed
    where {{ column }} > 0
    group by all
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

-- The catalog is the authority on subscriptions (at most one active per customer); the
-- subscription id an event carries is informational. Materialized (computed once), so that
-- usage_row, a number for each usage row, is the same wherever it is read: price matching
-- groups and joins on it instead of on eight text columns, in a fraction of the memory.
subscribed as {{ materialized_cte() }} (

    select
        metered.*,
        {{ row_number_any('metered.usage_hour, metered.customer_id, metered.meter, metered.provider, metered.model, metered.feature, metered.environment, metered.status') }}
            as usage_row,
        subscriptions.subscription_id,
        subscriptions.plan_id,
        subscriptions.currency,
        plans.bill_failed_attempts,
        {{ billing_period_start('metered.usage_hour', 'subscriptions.billing_anchor_day') }}
            as billing_period_start
    from metered
    -- Join conditions are written without OR: an OR in a left join's condition makes DuckDB
    -- compare every pair of rows (a nested-loop join) instead of hashing on the equal keys.
    left join subscriptions
        on
            metered.customer_id = subscriptions.customer_id
            and {{ subscription_active_at('metered.usage_hour', 'subscriptions') }}
    left join plans on subscriptions.plan_id = plans.plan_id

),

-- A price belongs to a plan or to a customer (an override): its owner key is one or the
-- other, and each usage row looks for prices under both of its keys.
owned_prices as (

    select
        *,
        case scope when 'plan' then 'plan:' || plan_id else 'customer:' || customer_id end
            as owner_key
    from prices

),

owner_keys as (

    select
        subscribed.usage_row,
        subscribed.usage_hour,
        subscribed.meter,
        subscribed.model,
        subscribed.provider,
        subscribed.feature,
        subscribed.environment,
        owner.owner_key
    from subscribed
    cross join lateral (
        select 'plan:' || subscribed.plan_id as owner_key
        union all
        select 'customer:' || subscribed.customer_id
    ) as owner

),

candidate_prices as (

    select
        owner_keys.usage_row,
        owned_prices.price_id,
        owned_prices.price_version,
        owned_prices.specificity
    from owner_keys
    inner join owned_prices
        on
            owner_keys.meter = owned_prices.meter
            and owner_keys.owner_key = owned_prices.owner_key
            and owner_keys.model like owned_prices.model_like escape {{ like_escape() }}
            and coalesce(owned_prices.provider = owner_keys.provider, owned_prices.provider is null)
            and coalesce(owned_prices.feature = owner_keys.feature, owned_prices.feature is null)
            and coalesce(
                owned_prices.environment = owner_keys.environment,
                owned_prices.environment is null
            )
            and owner_keys.usage_hour >= owned_prices.effective_from
            and owner_keys.usage_hour < coalesce(owned_prices.effective_to, {{ infinity_timestamp() }})

),

-- Per usage row, the most specific matching price wins; two or more sharing the top
-- specificity make the row ambiguous (never priced). Each price has at most one version in
-- force at an hour, so a price_id is one candidate of a row. Narrow rows and plain
-- aggregates only: DuckDB spills them to disk past its memory limit.
top_candidates as (

    select usage_row, price_id, price_version
    from (
        select
            *,
            max(specificity) over (partition by usage_row) as top_specificity
        from candidate_prices
    )
    where specificity = top_specificity

),

chosen as (

    select
        usage_row,
        count(*) as top_candidates,
        min(price_id) as price_id,
        min_by(price_version, price_id) as price_version
    from top_candidates
    group by usage_row

),

ambiguous as (

    select
        usage_row,
        {{ string_agg_ordered('price_id', "','", 'price_id') }} as top_price_ids
    from top_candidates
    where usage_row in (select usage_row from chosen where top_candidates > 1)
    group by usage_row

),

best as (

    select
        subscribed.*,
        chosen.price_id,
        chosen.price_version,
        prices.specificity,
        prices.pricing_model,
        prices.included_tokens,
        prices.package_size_tokens,
        prices.package_rounding,
        prices.package_price,
        prices.markup,
        prices.floor_per_token,
        coalesce(chosen.top_candidates, 0) as top_candidates,
        ambiguous.top_price_ids
    from subscribed
    left join chosen on subscribed.usage_row = chosen.usage_row
    left join ambiguous on subscribed.usage_row = ambiguous.usage_row
    left join prices
        on chosen.price_id = prices.price_id and chosen.price_version = prices.price_version

),

resolved as (

    select
        {{ star_except(['top_price_ids']) }},
        case
            when subscription_id is null then 'no_active_subscription'
            when price_id is null then 'no_matching_price'
            when top_candidates > 1 then 'ambiguous_price'
            -- A cost-plus price is the provider cost marked up: unknown cost, no price.
            when pricing_model = 'cost_plus' and not has_provider_cost
                then 'unknown_provider_cost'
        end as unpriced_reason,
        case when top_candidates > 1 then top_price_ids end as ambiguous_price_ids,
        case
            when status = 'success' or bill_failed_attempts then quantity else 0
        end as billable_quantity
    from best

),

-- Period-to-date quantity of the (subscription, price) before each row, in a total order
-- (hour, then the row's dimensions): hourly charges then sum exactly to the period amount.
-- The window sorts only the columns it needs; the rest joins back on usage_row.
period_to_date as (

    select
        usage_row,
        coalesce(sum(case when unpriced_reason is null then billable_quantity end) over (
            partition by subscription_id, price_id, billing_period_start
            -- nulls last, spelled out: DuckDB's default, and Spark's (nulls first) would
            -- give a null feature's row another place, so another period-to-date quantity.
            order by
                usage_hour, provider nulls last, model nulls last, feature nulls last,
                environment nulls last, status nulls last
            rows between unbounded preceding and 1 preceding
        ), 0) as period_quantity_before
    from (
        select
            usage_row, subscription_id, price_id, billing_period_start, usage_hour, provider,
            model, feature, environment, status, unpriced_reason, billable_quantity
        from resolved
    )

)

select
    resolved.{{ star_except(['usage_row']) }},
    period_to_date.period_quantity_before
from resolved
inner join period_to_date on resolved.usage_row = period_to_date.usage_row
-- The lookback rows only gave the window's rows their period-to-date quantity.
where {{ in_window('resolved.usage_hour') }}
