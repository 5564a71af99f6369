{#- A rollup: a finer mart's rows of the run's window summed to a coarser period. The daily and
    monthly marts of token usage (from hourly, from daily) and of rated charges are each this
    with their own grain (`dimensions`) and sums (`measures`, each cast back to the contract's
    type); the run deletes its window first (delete_window), so a rerun replaces it.

    finer: the model summed; finer_period: its period column (usage_hour, usage_date);
    period: the rollup's period column (usage_date, usage_month), the start of the `datepart`
    (day, month) that holds finer_period, as a date. -#}
{% macro rollup(finer, finer_period, period, datepart, dimensions, measures) -%}
with

finer as (

    select * from {{ ref(finer) }}
    where {{ in_window(finer_period) }}

),

aggregated as (

    select
        cast({{ dbt.date_trunc(datepart, finer_period) }} as date) as {{ period }},
        {{ dimensions }},
        {{ measures }}
    from finer
    group by all

)

select * from aggregated
{%- endmacro %}
