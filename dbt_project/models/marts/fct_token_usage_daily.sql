{{
    config(
        tags=["daily"],
        pre_hook="{{ delete_window('usage_date') }}",
    )
}}

with

hourly as (

    select * from {{ ref('fct_token_usage_hourly') }}
    where {{ in_window('usage_hour') }}

),

aggregated as (

    select
        cast({{ dbt.date_trunc('day', 'usage_hour') }} as date) as usage_date,
        {{ token_usage_dimensions() }},
        {{ token_usage_measures() }}
    from hourly
    group by all

)

select * from aggregated
