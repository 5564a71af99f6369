{#- The run's time window, [window_start, window_end), UTC, as %Y-%m-%dT%H:%M:%S.

    Where it comes from, first found: the `window_start`/`window_end` vars (`dbt build --vars`,
    as an analyst runs a window by hand), else the environment variables
    TOKENBILL_DBT_WINDOW_START/_END (how Dagster passes each run's partition window), else all
    of history. Dagster uses the environment because dbt re-parses the whole project whenever
    --vars change, which would cost every run seconds; a value read only at execution (not at
    parse time, when `execute` is false) leaves dbt's partial parse valid from run to run. -#}

{% macro run_setting(name, env_name, default) -%}
    {%- if execute -%}
        {{- var(name, env_var(env_name, default)) -}}
    {%- else -%}
        {{- default -}}
    {%- endif -%}
{%- endmacro %}

{% macro window_start() -%}
    cast('{{ run_setting("window_start", "TOKENBILL_DBT_WINDOW_START", "1970-01-01T00:00:00") }}' as timestamp)
{%- endmacro %}

{% macro window_end() -%}
    cast('{{ run_setting("window_end", "TOKENBILL_DBT_WINDOW_END", "9999-01-01T00:00:00") }}' as timestamp)
{%- endmacro %}

{#- True for rows whose period column falls in the window. -#}
{% macro in_window(column) -%}
    ({{ column }} >= {{ window_start() }} and {{ column }} < {{ window_end() }})
{%- endmacro %}

{#- Pre-hook of every windowed incremental model: delete exactly the window, so the insert
    that follows replaces it (a rerun or an overlapping backfill never doubles a row, and rows
    that disappeared upstream disappear here too). -#}
{% macro delete_window(column) -%}
    {{- adapter.dispatch('delete_window', 'tokenbill')(column) -}}
{%- endmacro %}

{% macro default__delete_window(column) -%}
    {%- if is_incremental() -%}
        delete from {{ this }} where {{ in_window(column) }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{#- The filter a data test applies to the model it tests: the run's window on the model's
    period column (the first of usage_hour, usage_date, usage_month, billing_period_start it
    has), so that a run tests what it rebuilt and an hourly run's tests cost the same in month
    twelve as in month one. A model without a period column is tested whole. -#}
{% macro window_filter(relation) -%}
    {%- if not execute -%}
        {{- return('true') -}}
    {%- endif -%}
    {%- set columns = adapter.get_columns_in_relation(relation) | map(attribute='name') | list -%}
    {%- for candidate in ['usage_hour', 'usage_date', 'usage_month', 'billing_period_start'] -%}
        {%- if candidate in columns -%}
            {{- return(in_window(candidate)) -}}
        {%- endif -%}
    {%- endfor -%}
    {{- return('true') -}}
{%- endmacro %}
