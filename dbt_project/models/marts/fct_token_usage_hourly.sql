{{
    config(
        tags=["hourly"],
        pre_hook="{{ delete_window('usage_hour') }}",
    )
}}

with

usage_events as (

    select * from {{ ref('stg_tokenbill__usage_events') }}
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
