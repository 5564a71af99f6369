{{
    config(
        tags=["daily"],
        pre_hook="{{ delete_window('usage_date') }}",
    )
}}

-- The hourly mart summed per UTC day (macros/rollup.sql).

{{ rollup(
    'fct_token_usage_hourly', 'usage_hour', 'usage_date', 'day',
    token_usage_dimensions(), token_usage_measures(),
) }}
