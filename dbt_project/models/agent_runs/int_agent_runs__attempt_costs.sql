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

-- The meters an attempt's tokens are rated on (those fct_rated_charges_hourly joins on).
meters as (

    select meter
    from (
        values
        ('uncached_input'),
        ('cached_input'),
        ('cache_write'),
        ('output'),
        ('reasoning'),
        ('requests')
    ) as meter_names (meter)

),

attempt_meters as (

    select
        attempts.event_id,
        attempts.usage_hour,
        attempts.customer_id,
        attempts.provider,
        attempts.model,
        attempts.feature,
        attempts.environment,
        attempts.status,
        meters.meter,
        case meters.meter
            when 'uncached_input' then attempts.uncached_input_tokens
            when 'cached_input' then attempts.cached_input_tokens
            when 'cache_write' then attempts.cache_write_tokens
            when 'output' then attempts.output_tokens
            when 'reasoning' then attempts.reasoning_tokens
            when 'requests' then cast(1 as bigint)
        end as quantity
    from attempts
    cross join meters

),

rated as (

    select * from {{ ref('fct_rated_charges_hourly') }}
    where {{ in_window('usage_hour') }}

),

-- The rows of fct_unpriced_usage, read from the priced usage (macro is_unpriced_usage): not a
-- child of fct_unpriced_usage, whose failing all_usage_is_priced test would skip it in dbt.
unpriced as (

    select
        usage_hour,
        customer_id,
        meter,
        provider,
        model,
        feature,
        environment,
        status,
        cast(quantity as bigint) as quantity,
        cast(provider_cost as decimal(38, 18)) as provider_cost
    from {{ ref('int_rating__priced_usage') }}
    where {{ is_unpriced_usage() }} and {{ in_window('usage_hour') }}

),

meter_costs as (

    select
        attempt_meters.event_id,
        attempt_meters.usage_hour,
        case
            when rated.usage_hour is not null
                then {{ attempt_share('rated.amount', 'attempt_meters.quantity', 'rated.quantity') }}
            when unpriced.usage_hour is not null then null
            else 0
        end as billed_amount,
        case
            when rated.usage_hour is not null and rated.provider_cost is not null
                then {{ attempt_share('rated.provider_cost', 'attempt_meters.quantity', 'rated.quantity') }}
            when rated.usage_hour is not null then null
            when unpriced.usage_hour is not null and unpriced.provider_cost is not null
                then {{ attempt_share('unpriced.provider_cost', 'attempt_meters.quantity', 'unpriced.quantity') }}
            when unpriced.usage_hour is not null then null
            when attempt_meters.meter in ('reasoning', 'requests') then 0
        end as provider_cost,
        unpriced.usage_hour is not null as is_unpriced
    from attempt_meters
    left join rated
        on
            attempt_meters.usage_hour = rated.usage_hour
            and attempt_meters.customer_id = rated.customer_id
            and attempt_meters.meter = rated.meter
            and attempt_meters.model = rated.model
            and attempt_meters.status = rated.status
            and attempt_meters.provider is not distinct from rated.provider
            and attempt_meters.feature is not distinct from rated.feature
            and attempt_meters.environment is not distinct from rated.environment
    left join unpriced
        on
            attempt_meters.usage_hour = unpriced.usage_hour
            and attempt_meters.customer_id = unpriced.customer_id
            and attempt_meters.meter = unpriced.meter
            and attempt_meters.model = unpriced.model
            and attempt_meters.status = unpriced.status
            and attempt_meters.provider is not distinct from unpriced.provider
            and attempt_meters.feature is not distinct from unpriced.feature
            and attempt_meters.environment is not distinct from unpriced.environment
    where attempt_meters.quantity > 0

),

-- An attempt is its event id in its hour: the same id more than dedup_lookback_hours later is
-- another attempt (ingestion and the dedup keep one row per id and hour).
costs_by_attempt as (

    select
        event_id,
        usage_hour,
        {{ known_sum('provider_cost') }} as provider_cost,
        {{ known_sum('billed_amount') }} as billed_amount,
        bool_or(is_unpriced) as has_unpriced_usage
    from meter_costs
    group by event_id, usage_hour

)

select
    -- ids
    attempts.event_id,
    attempts.run_id,
    attempts.request_id,
    attempts.trace_id,
    attempts.request_group_id,
    attempts.customer_id,

    -- dimensions
    attempts.provider,
    attempts.model,
    attempts.feature,
    attempts.environment,
    attempts.status,
    attempts.attempt,

    -- timestamps
    attempts.event_ts,
    attempts.usage_hour,

    -- measures
    attempts.input_tokens,
    attempts.cached_input_tokens,
    attempts.cache_write_tokens,
    attempts.uncached_input_tokens,
    attempts.output_tokens,
    attempts.reasoning_tokens,
    attempts.total_tokens,
    customers.currency,
    cast(costs_by_attempt.provider_cost as decimal(38, 18)) as provider_cost,
    cast(costs_by_attempt.billed_amount as decimal(38, 18)) as billed_amount,
    coalesce(costs_by_attempt.has_unpriced_usage, false) as has_unpriced_usage
from attempts
left join costs_by_attempt
    on attempts.event_id = costs_by_attempt.event_id and attempts.usage_hour = costs_by_attempt.usage_hour
left join {{ ref('dim_customers') }} as customers
    on attempts.customer_id = customers.customer_id
