with

source as (

    select * from {{ source('tokenbill_raw', 'usage_events') }}

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

),

deduplicated as (

    -- Same-hour resends were removed at ingestion; an event_id that also landed in an
    -- earlier hour (within the lookback) is a resend of that earlier event.
    select renamed.*
    from renamed
    where not exists (
        select 1
        from source as earlier
        where
            earlier.event_id = renamed.event_id
            and earlier.partition_hour < renamed.partition_hour
            and earlier.partition_hour >= {{ dbt.dateadd('hour', -var('dedup_lookback_hours'), 'renamed.partition_hour') }}
    )

)

select * from deduplicated
