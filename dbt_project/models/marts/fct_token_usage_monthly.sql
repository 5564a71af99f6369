{{
    config(
        tags=["monthly"],
        pre_hook="{{ delete_window('usage_month') }}",
    )
}}

with

daily as (

    select * from {{ ref('fct_token_usage_daily') }}
    where {{ in_window('usage_date') }}

),

aggregated as (

    select
        cast({{ dbt.date_trunc('month', 'usage_date') }} as date) as usage_month,
        {{ token_usage_dimensions() }},
        {{ token_usage_measures() }}
    from daily
    group by all

)

select * from aggregated
