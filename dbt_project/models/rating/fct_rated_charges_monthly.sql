{{
    config(
        tags=["monthly"],
        pre_hook="{{ delete_window('usage_month') }}",
    )
}}

-- The daily rated charges summed per calendar month (macros/rollup.sql).

{{ rollup(
    'fct_rated_charges_daily', 'usage_date', 'usage_month', 'month',
    rated_charge_dimensions(), rated_charge_measures(),
) }}
