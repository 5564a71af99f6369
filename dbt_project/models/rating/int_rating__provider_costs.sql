{{ config(materialized='ephemeral') }}

-- What the window's usage cost us at the providers' list prices, per hourly-mart grain and
-- meter. Computed per event: a prompt above 200k tokens switches the whole call to the
-- provider's long-context prices.

with

usage_events as (

    select * from {{ ref('stg_tokenbill__usage_events') }}
    where {{ in_window('usage_hour') }}

),

card as (

    select * from {{ ref('dim_provider_costs') }}

),

costed as (

    select
        usage_events.usage_hour,
        usage_events.customer_id,
        usage_events.provider,
        usage_events.model,
        usage_events.feature,
        usage_events.environment,
        usage_events.status,
        card.model is not null as has_card,
        usage_events.input_tokens > 200000 as is_long_context,
        usage_events.uncached_input_tokens,
        usage_events.cached_input_tokens,
        usage_events.cache_write_tokens,
        usage_events.output_tokens,
        usage_events.reasoning_tokens,
        card.input_per_token,
        card.output_per_token,
        card.cache_read_per_token,
        card.cache_write_per_token,
        card.reasoning_per_token,
        card.input_above_200k_per_token,
        card.output_above_200k_per_token,
        card.cache_read_above_200k_per_token,
        card.cache_write_above_200k_per_token
    from usage_events
    left join card
        on
            usage_events.provider = card.provider
            and usage_events.model = card.model
            and usage_events.event_ts >= card.effective_from
            and (card.effective_to is null or usage_events.event_ts < card.effective_to)

),

per_event as (

    select
        usage_hour,
        customer_id,
        provider,
        model,
        feature,
        environment,
        status,
        has_card,
        uncached_input_tokens
        * case when is_long_context then input_above_200k_per_token else input_per_token end
            as uncached_input_cost,
        cached_input_tokens
        * case when is_long_context then cache_read_above_200k_per_token else cache_read_per_token end
            as cached_input_cost,
        cache_write_tokens
        * case when is_long_context then cache_write_above_200k_per_token else cache_write_per_token end
            as cache_write_cost,
        (output_tokens - reasoning_tokens)
        * case when is_long_context then output_above_200k_per_token else output_per_token end
        + reasoning_tokens * reasoning_per_token as output_cost
    from costed

),

aggregated as (

    select
        usage_hour,
        customer_id,
        provider,
        model,
        feature,
        environment,
        status,
        bool_and(has_card) as has_card,
        sum(uncached_input_cost) as uncached_input_cost,
        sum(cached_input_cost) as cached_input_cost,
        sum(cache_write_cost) as cache_write_cost,
        sum(output_cost) as output_cost
    from per_event
    group by all

)

{% for meter in ['uncached_input', 'cached_input', 'cache_write', 'output'] %}
select
    usage_hour, customer_id, provider, model, feature, environment, status, has_card,
    '{{ meter }}' as meter,
    {{ meter }}_cost as provider_cost
from aggregated
{% if not loop.last %}union all{% endif %}
{% endfor %}
