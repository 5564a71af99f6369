{{
    config(
        schema='marts',
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'spark' else 'delete+insert'),
        unique_key=(none if target.type == 'spark' else ['customer_id', 'run_id']),
        partition_by=(['first_event_date'] if target.type == 'spark' else none),
        contract={'enforced': target.type != 'spark'},
        on_schema_change='fail',
        tags=['daily'],
        pre_hook="{{ delete_vanished('run_id', run_id('raw.')) }}",
    )
}}

-- depends_on: {{ source('tokenbill_raw', 'usage_events') }} (delete_vanished reads the raw lines)
-- One row per agent run: the attempts sharing a trace id (an attempt without one is its own
-- run). Incremental on whole runs: a run is touched by the window when one of its attempts is
-- in it (or its stored row overlaps it), and every touched run is re-aggregated from all of
-- its attempts, read from agent_run_max_hours() before the window to as many after it; the
-- insert replaces the run's row (delete+insert on customer_id, run_id). So a late attempt
-- re-aggregates its run, and re-running any day gives the same rows. A daily model: it runs
-- after the day's hours are rated and again after a late hour is re-rated (rollup_sensor).
--
-- The attempts' costs are computed once per hour (int_agent_runs__attempt_costs); here they
-- are only summed, each measure once: every run of the read range in one pass over its
-- attempts (runs; sums, counts, first and last, its first and last model), and its logical
-- calls from the attempts' keys alone (run_calls; the calls per model only for the few runs
-- on more than one model). Every run of the read range is aggregated and the touched ones are
-- kept: the same rows as aggregating the touched runs' attempts, without a join of attempts
-- to runs.
--
-- On Spark (macros/portable/agent_runs.sql) the mart is partitioned by first_event_date and a
-- build overwrites whole days: it keeps every run whose first attempt falls in the days of the
-- window +- agent_run_max_hours(), each aggregated from its attempts within as many hours of
-- those days. first_event_date is Spark's partition column only: it is not in the contract
-- (DuckDB's table has none), so the contract is enforced on DuckDB.

{%- set by_day = agent_runs_by_day() %}

with

attempt_costs as (

    select * from {{ ref('int_agent_runs__attempt_costs') }}
    where
        {{ agent_runs_read_range('usage_hour') }}

),

-- Every run of the read range, from its attempts.
runs as (

    select
        customer_id,
        run_id,
        max(trace_id) as trace_id,
        max(currency) as currency,
        min(event_ts) as first_event_at,
        max(event_ts) as last_event_at,
        bool_or({{ in_window('usage_hour') }}) as in_window,
        min(model) as first_model,
        max(model) as last_model,
        count(*) as attempts,
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
    from attempt_costs
    group by customer_id, run_id

),

-- The logical calls of each run on each model (a call retried on another model has a row per
-- model): keys only.
call_models as (

    select customer_id, run_id, request_id, model
    from attempt_costs
    group by customer_id, run_id, request_id, model

),

-- Logical calls per run: a call on two models is one call.
run_calls as (

    select customer_id, run_id, count(*) as model_calls
    from (
        select customer_id, run_id, request_id
        from call_models
        group by customer_id, run_id, request_id
    ) as calls
    group by customer_id, run_id

),

{% if is_incremental() and not by_day %}
-- Stored runs overlapping the window: re-aggregated too (their attempts may have changed).
stored as (

    select customer_id, run_id
    from {{ this }}
    where first_event_at < {{ window_end() }} and last_event_at >= {{ window_start() }}

),
{% endif %}

touched as (

    select runs.*
    from runs
    where
        {%- if by_day %}
        {{ agent_runs_in_days('runs.first_event_at') }}
        {%- else %}
        runs.in_window
        {%- endif %}
        {%- if is_incremental() and not by_day %}
        or exists (
            select 1
            from stored
            where stored.customer_id = runs.customer_id and stored.run_id = runs.run_id
        )
        {%- endif %}

),

-- The calls per model of the runs that used more than one model (a call retried on another
-- model): a list per run, built only for these (a few percent of runs; a list aggregate's
-- state is not spilled, so over every run of a month-wide window it outgrew DuckDB's memory
-- limit at 10M events). A one-model run's map is its model -> its calls.
multi_model_maps as (

    select
        customer_id,
        run_id,
        {{ map_agg('model', 'calls') }} as model_calls_by_model
    from (
        select call_models.customer_id, call_models.run_id, call_models.model, count(*) as calls
        from call_models
        inner join touched
            on call_models.customer_id = touched.customer_id and call_models.run_id = touched.run_id
        where touched.first_model <> touched.last_model
        group by call_models.customer_id, call_models.run_id, call_models.model
    ) as model_calls
    group by customer_id, run_id

)

select
    touched.run_id,
    touched.trace_id,
    touched.customer_id,
    touched.currency,
    touched.first_event_at,
    touched.last_event_at,
    cast(touched.attempts as bigint) as attempts,
    cast(run_calls.model_calls as bigint) as model_calls,
    coalesce(
        multi_model_maps.model_calls_by_model,
        {{ map_of_one('touched.first_model', 'cast(run_calls.model_calls as bigint)') }}
    ) as model_calls_by_model,
    cast(touched.retries as bigint) as retries,
    cast(touched.failed_attempts as bigint) as failed_attempts,
    cast(touched.retried_attempts as bigint) as retried_attempts,
    cast(touched.cancelled_attempts as bigint) as cancelled_attempts,
    cast(touched.input_tokens as bigint) as input_tokens,
    cast(touched.cached_input_tokens as bigint) as cached_input_tokens,
    cast(touched.cache_write_tokens as bigint) as cache_write_tokens,
    cast(touched.uncached_input_tokens as bigint) as uncached_input_tokens,
    cast(touched.output_tokens as bigint) as output_tokens,
    cast(touched.reasoning_tokens as bigint) as reasoning_tokens,
    cast(touched.total_tokens as bigint) as total_tokens,
    cast(touched.provider_cost as decimal(38, 18)) as provider_cost,
    touched.provider_cost is not null as has_provider_cost,
    cast(touched.billed_amount as decimal(38, 18)) as billed_amount,
    touched.has_unpriced_usage,
    cast(touched.billed_amount - touched.provider_cost as decimal(38, 18)) as margin
    {%- if by_day %},
    cast(touched.first_event_at as date) as first_event_date
    {%- endif %}
from touched
inner join run_calls
    on touched.customer_id = run_calls.customer_id and touched.run_id = run_calls.run_id
left join multi_model_maps
    on
        touched.customer_id = multi_model_maps.customer_id
        and touched.run_id = multi_model_maps.run_id
