{{
    config(
        schema='marts',
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'spark' else 'delete+insert'),
        unique_key=(none if target.type == 'spark' else ['customer_id', 'request_id']),
        partition_by=(['first_event_date'] if target.type == 'spark' else none),
        contract={'enforced': target.type != 'spark'},
        on_schema_change='fail',
        tags=['daily'],
        pre_hook="{{ delete_vanished('request_id', request_id('raw.')) }}",
    )
}}

-- depends_on: {{ source('tokenbill_raw', 'usage_events') }} (delete_vanished reads the raw lines)
-- One row per logical model call: the attempts sharing a request group id (an attempt
-- without one is its own request). Incremental on whole requests exactly as
-- fct_agent_run_costs is on whole runs (see there). Attempts are ordered by (attempt,
-- event_ts, event_id); attempts_until_success counts them up to and including the first
-- success. The attempts' costs are computed once per hour (int_agent_runs__attempt_costs).
-- On Spark, partitioned by first_event_date, a build overwrites whole days of requests as
-- fct_agent_run_costs does (see there): every request of the read range is aggregated and
-- those whose first attempt is in the days are kept.

{%- set by_day = agent_runs_by_day() %}

with

-- The attempts' costs, computed once per hour (int_agent_runs__attempt_costs).
attempt_costs as (

    select * from {{ ref('int_agent_runs__attempt_costs') }}
    where
        {{ agent_runs_read_range('usage_hour') }}

),

touched as (

    select distinct customer_id, request_id
    from attempt_costs
    {%- if not by_day %}
    where {{ in_window('usage_hour') }}
    {%- endif %}
    {% if is_incremental() and not by_day %}
    union
    select customer_id, request_id
    from {{ this }}
    where first_event_at < {{ window_end() }} and last_event_at >= {{ window_start() }}
    {% endif %}

),

-- touched holds each request once (distinct, union): the join keeps the attempts of the
-- touched requests, each once.
ordered as (

    select
        attempt_costs.*,
        row_number() over (
            partition by attempt_costs.customer_id, attempt_costs.request_id
            order by attempt_costs.attempt, attempt_costs.event_ts, attempt_costs.event_id
        ) as attempt_order
    from attempt_costs
    inner join touched
        on
            attempt_costs.customer_id = touched.customer_id
            and attempt_costs.request_id = touched.request_id

),

requests as (

    select
        customer_id,
        request_id,
        max(request_group_id) as request_group_id,
        max(run_id) as run_id,
        max(currency) as currency,
        max_by(model, attempt_order) as final_model,
        max_by(status, attempt_order) as final_status,
        min(event_ts) as first_event_at,
        max(event_ts) as last_event_at,
        count(*) as attempts,
        min(attempt_order) filter (where status = 'success') as attempts_until_success,
        count(*) filter (where status <> 'success') as failed_attempts,
        sum(total_tokens) as total_tokens,
        coalesce(sum(total_tokens) filter (where status <> 'success'), 0) as failed_attempt_tokens,
        {{ known_sum('provider_cost') }} as provider_cost,
        {{ known_sum('billed_amount') }} as billed_amount,
        -- known_sum over the failed attempts only (0 when there are none)
        case
            when count(*) filter (where status <> 'success')
                = count(provider_cost) filter (where status <> 'success')
                then coalesce(sum(provider_cost) filter (where status <> 'success'), 0)
        end as failed_attempt_provider_cost,
        case
            when count(*) filter (where status <> 'success')
                = count(billed_amount) filter (where status <> 'success')
                then coalesce(sum(billed_amount) filter (where status <> 'success'), 0)
        end as failed_attempt_billed_amount,
        bool_or(has_unpriced_usage) as has_unpriced_usage
    from ordered
    group by customer_id, request_id

)

select
    request_id,
    request_group_id,
    run_id,
    customer_id,
    currency,
    final_model,
    final_status,
    first_event_at,
    last_event_at,
    cast(attempts as bigint) as attempts,
    attempts_until_success is not null as succeeded,
    cast(attempts_until_success as bigint) as attempts_until_success,
    cast(failed_attempts as bigint) as failed_attempts,
    cast(total_tokens as bigint) as total_tokens,
    cast(failed_attempt_tokens as bigint) as failed_attempt_tokens,
    cast(provider_cost as decimal(38, 18)) as provider_cost,
    cast(failed_attempt_provider_cost as decimal(38, 18)) as failed_attempt_provider_cost,
    cast(billed_amount as decimal(38, 18)) as billed_amount,
    cast(failed_attempt_billed_amount as decimal(38, 18)) as failed_attempt_billed_amount,
    has_unpriced_usage
    {%- if by_day %},
    cast(first_event_at as date) as first_event_date
    {%- endif %}
from requests
{%- if by_day %}
where {{ agent_runs_in_days('first_event_at') }}
{%- endif %}
