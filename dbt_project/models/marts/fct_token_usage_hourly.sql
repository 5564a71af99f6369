{{
    config(
        tags=["hourly"],
        pre_hook="{{ delete_window('usage_hour') }}",
    )
}}

-- depends_on: {{ ref('stg_tokenbill__usage_events') }}
-- The staging events of the window, read through the bounded form of the staging SQL.

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
