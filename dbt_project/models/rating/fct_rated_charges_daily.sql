{{
    config(
        tags=["daily"],
        pre_hook="{{ delete_window('usage_date') }}",
    )
}}

-- The hourly rated charges summed per UTC day (macros/rollup.sql).

{{ rollup(
    'fct_rated_charges_hourly', 'usage_hour', 'usage_date', 'day',
    rated_charge_dimensions(), rated_charge_measures(),
) }}
