{{
    config(
        schema='marts',
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'spark' else 'append'),
        partition_by=(['usage_hour'] if target.type == 'spark' else none),
        on_schema_change='fail',
        tags=['hourly'],
        pre_hook="{{ delete_window('usage_hour') }}",
    )
}}

-- depends_on: {{ ref('stg_tokenbill__usage_events') }}
-- One row per deduplicated attempt (usage event) with its tokens, its provider cost and its
-- billed amount: its share of the rated hourly row it belongs to. Materialised once per hourly
-- window (delete, then insert the window, as int_rating__priced_usage), right after the rated
-- charges of the window, and rebuilt with them when a late hour re-rates the later hours of its
-- billing period (rerate_sensor). fct_agent_run_costs, fct_request_costs and
-- fct_retry_waste_monthly aggregate it (issue #13: each result computed once).
--
-- The rating owns prices, allowances, tiers and bill_failed_attempts: an attempt's share of
-- the rated hourly row it belongs to (same hour, customer, provider, model, feature,
-- environment, status and meter) is the row's amount and provider cost times the attempt's
-- quantity over the row's quantity, truncated to 18 decimals (macro attempt_share). So the attempts
-- of a row add up to the row, short by at most 1e-18 each. A call above 200k prompt tokens is
-- costed at long-context rates in its row: its share is the row's average rate. Usage no price
-- rates (fct_unpriced_usage) has an unknown billed amount (null, flagged, never 0). Reasoning
-- and request meters without a price are not billed (the rating's rule) and cost nothing
-- (reasoning is costed inside output, requests are free). Other usage without a rated row (a
-- non-billable failed attempt of a model no price names) has an unknown provider cost: null.

with

{{ usage_events_deduplicated(bounded=true) }},

attempts as (

    select
        -- ids
        event_id,
        {{ run_id() }} as run_id,
        {{ request_id() }} as request_id,
        trace_id,
        request_group_id,
        customer_id,

        -- dimensions
        provider,
        model,
        feature,
        environment,
        status,
        attempt,

        -- timestamps
        event_ts,
        usage_hour,

        -- measures
        input_tokens,
        cached_input_tokens,
        cache_write_tokens,
        uncached_input_tokens,
        output_tokens,
        reasoning_tokens,
        total_tokens
    from deduplicated
    -- an event's hour is its partition's (ingestion quarantines any other): the window the
    -- pre-hook deleted is the window inserted
    where {{ in_window('usage_hour') }}

),

-- The meters an attempt's tokens are rated on (those fct_rated_charges_hourly joins on), each
-- with the attempt's quantity of it.
{%- set meters = {
    'uncached_input': 'uncached_input_tokens',
    'cached_input': 'cached_input_tokens',
    'cache_write': 'cache_write_tokens',
    'output': 'output_tokens',
    'reasoning': 'reasoning_tokens',
    'requests': 'cast(1 as bigint)',
} %}
{%- set row_keys = ['usage_hour', 'customer_id', 'provider', 'model', 'feature', 'environment', 'status'] %}

-- The rated rows of the window, one row per hour, customer, provider, model, feature,
-- environment and status, with each meter's quantity and the parts of its amount and provider
-- cost that every attempt's share is computed from (attempt_share: the costly part once per
-- rated row, not per attempt). At most one rated row per key and meter: a customer has at most
-- one active subscription at an hour, and a meter two prices match is unpriced
-- (ambiguous_price).
rated_parts as (

    select
        {{ row_keys | join(',\n        ') }},
        meter,
        quantity,
        {{ attempt_share_whole('amount_unscaled', 'quantity') }} as amount_whole,
        {{ attempt_share_rest('amount_unscaled', 'quantity') }} as amount_rest,
        {{ attempt_share_whole('cost_unscaled', 'quantity') }} as cost_whole,
        {{ attempt_share_rest('cost_unscaled', 'quantity') }} as cost_rest
    from (
        select
            *,
            {{ attempt_share_unscaled('amount') }} as amount_unscaled,
            {{ attempt_share_unscaled('provider_cost') }} as cost_unscaled
        from {{ ref('fct_rated_charges_hourly') }}
        where {{ in_window('usage_hour') }}
    ) as rated_rows

),

rated as (

    select
        {{ row_keys | join(',\n        ') }},
        {%- for meter in meters %}
        bool_or(true) filter (where meter = '{{ meter }}') as {{ meter }}_present,
        max(quantity) filter (where meter = '{{ meter }}') as {{ meter }}_quantity,
        max(amount_whole) filter (where meter = '{{ meter }}') as {{ meter }}_amount_whole,
        max(amount_rest) filter (where meter = '{{ meter }}') as {{ meter }}_amount_rest,
        bool_or(cost_whole is not null) filter (where meter = '{{ meter }}') as {{ meter }}_cost_known,
        max(cost_whole) filter (where meter = '{{ meter }}') as {{ meter }}_cost_whole,
        max(cost_rest) filter (where meter = '{{ meter }}') as {{ meter }}_cost_rest
        {%- if not loop.last %},{% endif %}
        {%- endfor %}
    from rated_parts
    group by {{ row_keys | join(', ') }}

),

-- The rows of fct_unpriced_usage, read from the priced usage (macro is_unpriced_usage): not a
-- child of fct_unpriced_usage, whose failing all_usage_is_priced test would skip it in dbt.
-- Pivoted as the rated rows (at most one per key and meter, as there).
unpriced_parts as (

    select
        {{ row_keys | join(',\n        ') }},
        meter,
        quantity,
        {{ attempt_share_whole('cost_unscaled', 'quantity') }} as cost_whole,
        {{ attempt_share_rest('cost_unscaled', 'quantity') }} as cost_rest
    from (
        select
            {{ row_keys | join(',\n            ') }},
            meter,
            cast(quantity as bigint) as quantity,
            {{ attempt_share_unscaled('provider_cost') }} as cost_unscaled
        from {{ ref('int_rating__priced_usage') }}
        where {{ is_unpriced_usage() }} and {{ in_window('usage_hour') }}
    ) as unpriced_rows

),

unpriced as (

    select
        {{ row_keys | join(',\n        ') }},
        {%- for meter in meters %}
        bool_or(true) filter (where meter = '{{ meter }}') as {{ meter }}_present,
        max(quantity) filter (where meter = '{{ meter }}') as {{ meter }}_quantity,
        bool_or(cost_whole is not null) filter (where meter = '{{ meter }}') as {{ meter }}_cost_known,
        max(cost_whole) filter (where meter = '{{ meter }}') as {{ meter }}_cost_whole,
        max(cost_rest) filter (where meter = '{{ meter }}') as {{ meter }}_cost_rest
        {%- if not loop.last %},{% endif %}
        {%- endfor %}
    from unpriced_parts
    group by {{ row_keys | join(', ') }}

),

-- Each attempt's billed amount and provider cost on each meter it has a quantity of: its
-- share of the meter's rated row; unknown (null) when no price rates it (unpriced); 0 when
-- there is neither (unbilled). Its provider cost: its share of the rated or unpriced row's
-- cost, unknown when that is; free for reasoning and request meters without a row. A meter
-- of zero quantity adds 0 to both (and is not unpriced).
meter_costs as (

    select
        attempts.*,
        {%- for meter, quantity in meters.items() %}
        {%- set q = 'attempts.' ~ quantity if quantity.endswith('_tokens') else quantity %}
        case
            when {{ q }} <= 0 then 0
            when rated.{{ meter }}_present
                then {{ attempt_share('rated.' ~ meter ~ '_amount', q, 'rated.' ~ meter ~ '_quantity') }}
            when unpriced.{{ meter }}_present then null
            else 0
        end as {{ meter }}_billed_amount,
        case
            when {{ q }} <= 0 then 0
            when rated.{{ meter }}_cost_known
                then {{ attempt_share('rated.' ~ meter ~ '_cost', q, 'rated.' ~ meter ~ '_quantity') }}
            when rated.{{ meter }}_present then null
            when unpriced.{{ meter }}_cost_known
                then {{ attempt_share('unpriced.' ~ meter ~ '_cost', q, 'unpriced.' ~ meter ~ '_quantity') }}
            when unpriced.{{ meter }}_present then null
            {%- if meter in ('reasoning', 'requests') %}
            else 0
            {%- endif %}
        end as {{ meter }}_provider_cost,
        {{ q }} > 0 and coalesce(unpriced.{{ meter }}_present, false) as {{ meter }}_is_unpriced
        {%- if not loop.last %},{% endif %}
        {%- endfor %}
    from attempts
    left join rated
        on
            attempts.usage_hour = rated.usage_hour
            and attempts.customer_id = rated.customer_id
            and attempts.model = rated.model
            and attempts.status = rated.status
            and attempts.provider is not distinct from rated.provider
            and attempts.feature is not distinct from rated.feature
            and attempts.environment is not distinct from rated.environment
    left join unpriced
        on
            attempts.usage_hour = unpriced.usage_hour
            and attempts.customer_id = unpriced.customer_id
            and attempts.model = unpriced.model
            and attempts.status = unpriced.status
            and attempts.provider is not distinct from unpriced.provider
            and attempts.feature is not distinct from unpriced.feature
            and attempts.environment is not distinct from unpriced.environment

)

-- An attempt is its event id in its hour: the same id more than dedup_lookback_hours later is
-- another attempt (ingestion and the dedup keep one row per id and hour). Its provider cost
-- and billed amount are the sums over its meters, known only if every meter's is (known_sum).
select
    -- ids
    meter_costs.event_id,
    meter_costs.run_id,
    meter_costs.request_id,
    meter_costs.trace_id,
    meter_costs.request_group_id,
    meter_costs.customer_id,

    -- dimensions
    meter_costs.provider,
    meter_costs.model,
    meter_costs.feature,
    meter_costs.environment,
    meter_costs.status,
    meter_costs.attempt,

    -- timestamps
    meter_costs.event_ts,
    meter_costs.usage_hour,

    -- measures
    meter_costs.input_tokens,
    meter_costs.cached_input_tokens,
    meter_costs.cache_write_tokens,
    meter_costs.uncached_input_tokens,
    meter_costs.output_tokens,
    meter_costs.reasoning_tokens,
    meter_costs.total_tokens,
    customers.currency,
    {%- for measure in ['provider_cost', 'billed_amount'] %}
    cast(
        case
            when
                {%- for meter in meters %}
                meter_costs.{{ meter }}_{{ measure }} is not null{% if not loop.last %} and{% endif %}
                {%- endfor %}
                then
                {%- for meter in meters %}
                meter_costs.{{ meter }}_{{ measure }}{% if not loop.last %} +{% endif %}
                {%- endfor %}
        end
        as decimal(38, 18)
    ) as {{ measure }},
    {%- endfor %}
    {%- for meter in meters %}
    meter_costs.{{ meter }}_is_unpriced{% if not loop.last %} or{% endif %}
    {%- endfor %} as has_unpriced_usage
from meter_costs
left join {{ ref('dim_customers') }} as customers
    on meter_costs.customer_id = customers.customer_id
