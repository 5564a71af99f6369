{{
    config(
        tags=["monthly"],
        pre_hook="{{ delete_window('usage_month') }}",
    )
}}

-- The daily mart summed per calendar month (macros/rollup.sql).

{{ rollup(
    'fct_token_usage_daily', 'usage_date', 'usage_month', 'month',
    token_usage_dimensions(), token_usage_measures(),
) }}
