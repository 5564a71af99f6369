{#- Typed, deduplicated usage events: the staging model's SQL, for all of history (the
    staging view analysts query) or for the run's window only (what the hourly models read).

    Same-hour resends were removed at ingestion; an event_id that also landed in an earlier
    hour, within dedup_lookback_hours, is a resend of that earlier event and is dropped. A view
    cannot be bounded by the caller's window (the earlier side of that comparison is a second
    scan of the source), so windowed models inline this macro with bounded=true: they read the
    window plus the lookback before it, and an hourly run costs the same after a year of
    history as after a day. -#}
{% macro usage_events_deduplicated(bounded=false) %}
{%- set lookback = var('dedup_lookback_hours') -%}

source as (

    select * from {{ source('tokenbill_raw', 'usage_events') }}
    {%- if bounded %}
    where
        partition_hour >= {{ dbt.dateadd('hour', -lookback, window_start()) }}
        and partition_hour < {{ window_end() }}
    {%- endif %}

),

renamed as (

    select
        -- ids
        event_id,
        customer_id,
        subscription_id,
        request_group_id,
        trace_id,

        -- dimensions
        plan,
        feature,
        provider,
        model,
        environment,
        region,
        status,
        attempt,

        -- measures: absent subsets are zero; uncached input is billed at the plain rate
        input_tokens,
        coalesce(cached_input_tokens, 0) as cached_input_tokens,
        coalesce(cache_write_tokens, 0) as cache_write_tokens,
        input_tokens
        - coalesce(cached_input_tokens, 0)
        - coalesce(cache_write_tokens, 0) as uncached_input_tokens,
        output_tokens,
        coalesce(reasoning_tokens, 0) as reasoning_tokens,
        input_tokens + output_tokens as total_tokens,

        -- timestamps
        event_ts,
        {{ dbt.date_trunc('hour', 'event_ts') }} as usage_hour,
        partition_hour,

        -- lineage
        source_key,
        line_number,
        metadata

    from source
    {%- if bounded %}
    where {{ in_window('partition_hour') }}
    {%- endif %}

),

deduplicated as (

    select renamed.*
    from renamed
    where not exists (
        select 1
        from source as earlier
        where
            earlier.event_id = renamed.event_id
            and earlier.partition_hour < renamed.partition_hour
            and earlier.partition_hour >= {{ dbt.dateadd('hour', -lookback, 'renamed.partition_hour') }}
    )

)
{%- endmacro %}
