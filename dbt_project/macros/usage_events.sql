{#- Typed, deduplicated usage events: the staging model's SQL, for all of history (the
    staging view analysts query) or for the run's window only (what the hourly models read).

    Same-hour resends were removed at ingestion; an event_id that also landed in an earlier
    hour, within dedup_lookback_hours, is a resend of that earlier event and is dropped (a
    row is one line of one object: source_key and line_number identify it). A view
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
        -- optional subsets by cache TTL and modality (issue #14), absent as zero too
        coalesce(cache_write_5m_tokens, 0) as cache_write_5m_tokens,
        coalesce(cache_write_1h_tokens, 0) as cache_write_1h_tokens,
        coalesce(audio_input_tokens, 0) as audio_input_tokens,
        coalesce(image_input_tokens, 0) as image_input_tokens,
        coalesce(audio_output_tokens, 0) as audio_output_tokens,
        coalesce(image_output_tokens, 0) as image_output_tokens,

        -- timestamps
        event_ts,
        {{ dbt.date_trunc('hour', 'event_ts') }} as usage_hour,
        partition_hour,

        -- lineage
        source_key,
        line_number,
        metadata,
        source_format

    from source
    {%- if bounded %}
    where {{ in_window('partition_hour') }}
    {%- endif %}

),

-- Only an event_id that occurs twice can drop a row: find those by a hash of the id (one
-- 64-bit number per row to group, not the text), then compare the few rows that share a
-- hash exactly (a hash collision only adds a row to compare).
repeated_ids as (

    select hash(event_id) as id_hash
    from source
    group by id_hash
    having count(*) > 1

),

repeats as (

    select event_id, partition_hour, source_key, line_number
    from source
    where hash(event_id) in (select id_hash from repeated_ids)

),

resends as (

    select later.source_key, later.line_number
    from repeats as later
    where exists (
        select 1
        from repeats as earlier
        where
            earlier.event_id = later.event_id
            and earlier.partition_hour < later.partition_hour
            and earlier.partition_hour >= {{ dbt.dateadd('hour', -lookback, 'later.partition_hour') }}
    )

),

deduplicated as (

    select renamed.*
    from renamed
    anti join resends
        on renamed.source_key = resends.source_key and renamed.line_number = resends.line_number

)
{%- endmacro %}
