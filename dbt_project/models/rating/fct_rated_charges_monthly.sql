{{
    config(
        materialized='incremental',
        tags=["monthly"],
        pre_hook="{{ delete_window('usage_month') }}",
    )
}}

with

daily as (

    select * from {{ ref('fct_rated_charges_daily') }}
    where {{ in_window('usage_date') }}

)

select
    cast({{ dbt.date_trunc('month', 'usage_date') }} as date) as usage_month,
    {{ rated_charge_dimensions() }},
    {{ rated_charge_measures() }}
from daily
group by all
