{#- Helpers of the agent-run marts (fct_agent_run_costs, fct_request_costs,
    fct_retry_waste_monthly). -#}

{#- Hours an agent run (or a request group) may span: the run marts read this many hours of
    events before and after their window, so a run touched by the window is re-aggregated
    from all of its attempts. A run longer than this is aggregated from the part that falls in
    the window +- this many hours. -#}
{% macro agent_run_max_hours() -%}
    {{- var('agent_run_max_hours', 24) -}}
{%- endmacro %}

{#- The id of an attempt's run and of its request: the trace id and the request group id, or
    the event's own id (prefixed event:) when the producer sent none. -#}
{% macro run_id(alias='') -%}
    coalesce({{ alias }}trace_id, 'event:' || {{ alias }}event_id)
{%- endmacro %}

{% macro request_id(alias='') -%}
    coalesce({{ alias }}request_group_id, 'event:' || {{ alias }}event_id)
{%- endmacro %}

{#- CTEs ending in `attempt_costs`: one row per deduplicated attempt (event) whose partition
    hour is in the window widened by hours_before / hours_after, with its tokens, its provider
    cost and its billed amount.

    The rating owns prices, allowances, tiers and bill_failed_attempts: an attempt's share of
    the rated hourly row it belongs to (same hour, customer, provider, model, feature,
    environment, status and meter) is the row's amount and provider cost times the attempt's
    quantity over the row's quantity, truncated to 18 decimals (macro prorate). So the
    attempts of a row add up to the row, short by at most 1e-18 each. A call above 200k prompt
    tokens is costed at long-context rates in its row: its share is the row's average rate.
    Usage no price rates (fct_unpriced_usage) has an unknown billed amount (null, flagged,
    never 0). Reasoning and request meters without a price are not billed (the rating's rule)
    and cost nothing (reasoning is costed inside output, requests are free). Other usage
    without a rated row (a non-billable failed attempt of a model no price names) has an
    unknown provider cost: null. -#}
{% macro attempt_costs(hours_before=0, hours_after=0) %}

{{ usage_events_deduplicated(bounded=true, hours_before=hours_before, hours_after=hours_after) }},

attempts as (

    select
        event_id,
        {{ run_id() }} as run_id,
        {{ request_id() }} as request_id,
        trace_id,
        request_group_id,
        customer_id,
        provider,
        model,
        feature,
        environment,
        status,
        attempt,
        event_ts,
        usage_hour,
        input_tokens,
        cached_input_tokens,
        cache_write_tokens,
        uncached_input_tokens,
        output_tokens,
        reasoning_tokens,
        total_tokens
    from deduplicated

),

attempt_meters as (

    unpivot (
        select
            event_id,
            usage_hour,
            customer_id,
            provider,
            model,
            feature,
            environment,
            status,
            uncached_input_tokens as uncached_input,
            cached_input_tokens as cached_input,
            cache_write_tokens as cache_write,
            output_tokens as output,
            reasoning_tokens as reasoning,
            cast(1 as bigint) as requests
        from attempts
    )
    on uncached_input, cached_input, cache_write, output, reasoning, requests
    into name meter value quantity

),

rated as (

    select * from {{ ref('fct_rated_charges_hourly') }}
    where
        usage_hour >= {{ dbt.dateadd('hour', -hours_before, window_start()) }}
        and usage_hour < {{ dbt.dateadd('hour', hours_after, window_end()) }}

),

unpriced as (

    select * from {{ ref('fct_unpriced_usage') }}
    where
        usage_hour >= {{ dbt.dateadd('hour', -hours_before, window_start()) }}
        and usage_hour < {{ dbt.dateadd('hour', hours_after, window_end()) }}

),

meter_costs as (

    select
        attempt_meters.event_id,
        case
            when rated.usage_hour is not null
                then {{ prorate('rated.amount', 'attempt_meters.quantity', 'rated.quantity') }}
            when unpriced.usage_hour is not null then null
            else 0
        end as billed_amount,
        case
            when rated.usage_hour is not null and rated.provider_cost is not null
                then {{ prorate('rated.provider_cost', 'attempt_meters.quantity', 'rated.quantity') }}
            when rated.usage_hour is not null then null
            when unpriced.usage_hour is not null and unpriced.provider_cost is not null
                then {{ prorate('unpriced.provider_cost', 'attempt_meters.quantity', 'unpriced.quantity') }}
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

costs_by_attempt as (

    select
        event_id,
        {{ known_sum('provider_cost') }} as provider_cost,
        {{ known_sum('billed_amount') }} as billed_amount,
        bool_or(is_unpriced) as has_unpriced_usage
    from meter_costs
    group by event_id

),

attempt_costs as (

    select
        attempts.*,
        customers.currency,
        costs_by_attempt.provider_cost,
        costs_by_attempt.billed_amount,
        coalesce(costs_by_attempt.has_unpriced_usage, false) as has_unpriced_usage
    from attempts
    left join costs_by_attempt on attempts.event_id = costs_by_attempt.event_id
    left join {{ ref('dim_customers') }} as customers
        on attempts.customer_id = customers.customer_id

)
{%- endmacro %}

{#- Pre-hook of the run marts (delete+insert on their key): a stored run or request whose
    span overlaps the window and none of whose raw lines is left in the read range (its
    objects were removed or replaced) is deleted; every other run the window touches is
    replaced by the model's insert. key: the mart's id column; raw_key: the same id computed
    from a raw line (alias raw). -#}
{% macro delete_vanished(key, raw_key) -%}
    {%- if is_incremental() -%}
        {%- set hours = agent_run_max_hours() | int -%}
        delete from {{ this }}
        where
            first_event_at < {{ window_end() }}
            and last_event_at >= {{ window_start() }}
            and {{ key }} not in (
                select {{ raw_key }}
                from {{ source('tokenbill_raw', 'usage_events') }} as raw
                where
                    raw.partition_hour >= {{ dbt.dateadd('hour', -hours, window_start()) }}
                    and raw.partition_hour < {{ dbt.dateadd('hour', hours, window_end()) }}
            )
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{#- floor(numerator * multiplier / denominator) of two decimal(38, 18) amounts, exactly, as a
    whole number (hugeint), for a positive denominator: DuckDB's decimal division returns a
    double, so the division is done on the amounts' unscaled integers (their digits without
    the point). -#}
{% macro whole_quotient(numerator, denominator, multiplier=1) -%}
    (
        cast(replace(cast(cast({{ numerator }} as decimal(38, 18)) as varchar), '.', '') as hugeint)
        * {{ multiplier }}
        // cast(replace(cast(cast({{ denominator }} as decimal(38, 18)) as varchar), '.', '') as hugeint)
    )
{%- endmacro %}
