{{
    config(
        materialized='incremental',
        tags=["daily"],
        pre_hook="{{ delete_window('usage_date') }}",
    )
}}

with

hourly as (

    select * from {{ ref('fct_rated_charges_hourly') }}
    where {{ in_window('usage_hour') }}

)

select
    cast({{ dbt.date_trunc('day', 'usage_hour') }} as date) as usage_date,
    {{ rated_charge_dimensions() }},
    {{ rated_charge_measures() }}
from hourly
group by all
