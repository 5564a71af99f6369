{{
    config(
        schema='marts',
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['customer_id', 'run_id'],
        on_schema_change='fail',
        tags=['daily'],
        pre_hook="{{ delete_vanished('run_id', run_id('raw.')) }}",
    )
}}

-- depends_on: {{ ref('stg_tokenbill__usage_events') }}
-- One row per agent run: the attempts sharing a trace id (an attempt without one is its own
-- run). Incremental on whole runs: a run is touched by the window when one of its attempts is
-- in it (or its stored row overlaps it), and every touched run is re-aggregated from all of
-- its attempts, read from agent_run_max_hours() before the window to as many after it; the
-- insert replaces the run's row (delete+insert on customer_id, run_id). So a late attempt
-- re-aggregates its run, and re-running any day gives the same rows. A daily model: it runs
-- after the day's hours are rated and again after a late hour is re-rated (rollup_sensor).

with

{{ attempt_costs(hours_before=agent_run_max_hours() | int, hours_after=agent_run_max_hours() | int) }},

touched as (

    select distinct customer_id, run_id
    from attempt_costs
    where {{ in_window('usage_hour') }}
    {% if is_incremental() %}
    union
    select customer_id, run_id
    from {{ this }}
    where first_event_at < {{ window_end() }} and last_event_at >= {{ window_start() }}
    {% endif %}

),

run_attempts as (

    select attempt_costs.*
    from attempt_costs
    semi join touched
        on attempt_costs.customer_id = touched.customer_id and attempt_costs.run_id = touched.run_id

),

calls_by_model as (

    select customer_id, run_id, map(list(model order by model), list(calls order by model)) as model_calls
    from (
        select customer_id, run_id, model, cast(count(distinct request_id) as bigint) as calls
        from run_attempts
        group by all
    )
    group by all

),

runs as (

    select
        customer_id,
        run_id,
        max(trace_id) as trace_id,
        max(currency) as currency,
        min(event_ts) as first_event_at,
        max(event_ts) as last_event_at,
        count(*) as attempts,
        count(distinct request_id) as model_calls,
        count(*) filter (where attempt > 1) as retries,
        count(*) filter (where status = 'failed') as failed_attempts,
        count(*) filter (where status = 'retried') as retried_attempts,
        count(*) filter (where status = 'cancelled') as cancelled_attempts,
        sum(input_tokens) as input_tokens,
        sum(cached_input_tokens) as cached_input_tokens,
        sum(cache_write_tokens) as cache_write_tokens,
        sum(uncached_input_tokens) as uncached_input_tokens,
        sum(output_tokens) as output_tokens,
        sum(reasoning_tokens) as reasoning_tokens,
        sum(total_tokens) as total_tokens,
        {{ known_sum('provider_cost') }} as provider_cost,
        {{ known_sum('billed_amount') }} as billed_amount,
        bool_or(has_unpriced_usage) as has_unpriced_usage
    from run_attempts
    group by all

)

select
    runs.run_id,
    runs.trace_id,
    runs.customer_id,
    runs.currency,
    runs.first_event_at,
    runs.last_event_at,
    cast(runs.attempts as bigint) as attempts,
    cast(runs.model_calls as bigint) as model_calls,
    calls_by_model.model_calls as model_calls_by_model,
    cast(runs.retries as bigint) as retries,
    cast(runs.failed_attempts as bigint) as failed_attempts,
    cast(runs.retried_attempts as bigint) as retried_attempts,
    cast(runs.cancelled_attempts as bigint) as cancelled_attempts,
    cast(runs.input_tokens as bigint) as input_tokens,
    cast(runs.cached_input_tokens as bigint) as cached_input_tokens,
    cast(runs.cache_write_tokens as bigint) as cache_write_tokens,
    cast(runs.uncached_input_tokens as bigint) as uncached_input_tokens,
    cast(runs.output_tokens as bigint) as output_tokens,
    cast(runs.reasoning_tokens as bigint) as reasoning_tokens,
    cast(runs.total_tokens as bigint) as total_tokens,
    cast(runs.provider_cost as decimal(38, 18)) as provider_cost,
    runs.provider_cost is not null as has_provider_cost,
    cast(runs.billed_amount as decimal(38, 18)) as billed_amount,
    runs.has_unpriced_usage,
    cast(runs.billed_amount - runs.provider_cost as decimal(38, 18)) as margin
from runs
inner join calls_by_model
    on runs.customer_id = calls_by_model.customer_id and runs.run_id = calls_by_model.run_id
