{#- The run's time window, [window_start, window_end), from the vars Dagster passes. -#}

{% macro window_start() -%}
    cast('{{ var("window_start") }}' as timestamp)
{%- endmacro %}

{% macro window_end() -%}
    cast('{{ var("window_end") }}' as timestamp)
{%- endmacro %}

{#- True for rows whose period column falls in the window. -#}
{% macro in_window(column) -%}
    ({{ column }} >= {{ window_start() }} and {{ column }} < {{ window_end() }})
{%- endmacro %}

{#- Pre-hook of every windowed incremental model: delete exactly the window, so the insert
    that follows replaces it (a rerun or an overlapping backfill never doubles a row, and rows
    that disappeared upstream disappear here too). -#}
{% macro delete_window(column) -%}
    {%- if is_incremental() -%}
        delete from {{ this }} where {{ in_window(column) }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
