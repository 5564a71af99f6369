{{
    config(
        tags=["hourly"],
        pre_hook="{{ delete_window('usage_hour') }}",
    )
}}

-- The window's events, read from raw.usage_events through the staging SQL in its bounded form
-- (macros/usage_events.sql): the same typed, deduplicated events as stg_tokenbill__usage_events,
-- which is a view over all of history and so is not read here.

with

{{ usage_events_deduplicated(bounded=true) }},

usage_events as (

    select * from deduplicated
    where {{ in_window('usage_hour') }}

),

aggregated as (

    select
        usage_hour,
        {{ token_usage_dimensions() }},
        {{ token_usage_measures(from_events=true) }}
    from usage_events
    group by all

)

select * from aggregated
