{#- The agent-run models (models/agent_runs) on each engine (SPARK.md, "Agent runs"). Each
    default is the project's DuckDB SQL, unchanged; spark__ is what Spark needs instead.

    The run marts (fct_agent_run_costs, fct_request_costs) replace whole runs (requests). DuckDB
    deletes the stored rows of the runs the window touches and inserts them again
    (delete+insert on their key). Spark's Parquet tables cannot delete: there the marts are
    partitioned by the UTC day of a run's first attempt (first_event_date) and a build
    overwrites whole days (insert_overwrite), so it must produce every run of each day it
    writes: the days from that of window_start - agent_run_max_hours to that of window_end +
    agent_run_max_hours. They hold every run the window touches (an attempt in the window),
    every stored run overlapping it, and the day a run moves from when a late attempt makes it
    start earlier. Each such run is aggregated from its attempts within agent_run_max_hours of
    those days. -#}

{#- Whether the run marts keep every run of whole days (Spark) rather than the runs the
    window touches (DuckDB). -#}
{% macro agent_runs_by_day() -%}
    {{- return(adapter.dispatch('agent_runs_by_day', 'tokenbill')()) -}}
{%- endmacro %}

{% macro default__agent_runs_by_day() -%}
    {{- return(false) -}}
{%- endmacro %}

{% macro spark__agent_runs_by_day() -%}
    {{- return(true) -}}
{%- endmacro %}

{#- The first and the end of the days a Spark build of a run mart overwrites: midnight of the
    day of window_start - agent_run_max_hours, and midnight after the day of window_end +
    agent_run_max_hours (one more day than needed when that is a midnight: harmless, the day
    is rebuilt whole). -#}
{% macro agent_runs_days_start() -%}
    {%- set hours = agent_run_max_hours() | int -%}
    cast(cast({{ dbt.dateadd('hour', -hours, window_start()) }} as date) as timestamp)
{%- endmacro %}

{% macro agent_runs_days_end() -%}
    {%- set hours = agent_run_max_hours() | int -%}
    {{ dbt.dateadd('day', 1, 'cast(cast(' ~ dbt.dateadd('hour', hours, window_end()) ~ ' as date) as timestamp)') }}
{%- endmacro %}

{#- The attempts a run mart reads (column: their usage_hour): within agent_run_max_hours of the
    window on DuckDB, of the days it overwrites on Spark. -#}
{% macro agent_runs_read_range(column) -%}
    {{- return(adapter.dispatch('agent_runs_read_range', 'tokenbill')(column)) -}}
{%- endmacro %}

{% macro default__agent_runs_read_range(column) -%}
    {%- set hours = agent_run_max_hours() | int -%}
    {{ column }} >= {{ dbt.dateadd('hour', -hours, window_start()) }}
        and {{ column }} < {{ dbt.dateadd('hour', hours, window_end()) }}
{%- endmacro %}

{% macro spark__agent_runs_read_range(column) -%}
    {%- set hours = agent_run_max_hours() | int -%}
    {{ column }} >= {{ dbt.dateadd('hour', -hours, agent_runs_days_start()) }}
        and {{ column }} < {{ dbt.dateadd('hour', hours, agent_runs_days_end()) }}
{%- endmacro %}

{#- The runs (requests) a Spark build keeps: those whose first attempt is in the days it
    overwrites. -#}
{% macro agent_runs_in_days(first_event_at) -%}
    ({{ first_event_at }} >= {{ agent_runs_days_start() }} and {{ first_event_at }} < {{ agent_runs_days_end() }})
{%- endmacro %}

{#- An attempt's share of its rated row: amount x quantity / row_quantity, truncated toward zero
    to 18 decimals (what prorate computes). Each rated row is shared by many attempts, so the
    costly part is done once per row: the amount's unscaled integer U (its decimal(38, 18)
    digits without the point, attempt_share_unscaled) split by the row quantity Q into a whole
    part W = U / Q and a rest R = U % Q (truncating; |R| < Q fits a bigint). An attempt of
    quantity q then gets W x q + R x q / Q: exact, since U x q = W x Q x q + R x q with both
    terms of U's sign. R x q / Q is a native bigint division whenever R x q fits one, a 128-bit
    one otherwise (a 128-bit division and a decimal-to-text cast per attempt and meter were
    most of the hourly attempt costs' time). attempt_share reads the columns <name>_whole and
    <name>_rest. -#}
{% macro attempt_share_unscaled(amount) -%}
    {{- return(adapter.dispatch('attempt_share_unscaled', 'tokenbill')(amount)) -}}
{%- endmacro %}

{% macro default__attempt_share_unscaled(amount) -%}
    {{ unscaled_hugeint(amount) }}
{%- endmacro %}

{% macro spark__attempt_share_unscaled(amount) -%}
    cast(replace(cast(cast({{ amount }} as decimal(38, 18)) as string), '.', '') as decimal(38, 0))
{%- endmacro %}

{% macro attempt_share_whole(unscaled, row_quantity) -%}
    {{- return(adapter.dispatch('attempt_share_whole', 'tokenbill')(unscaled, row_quantity)) -}}
{%- endmacro %}

{% macro default__attempt_share_whole(unscaled, row_quantity) -%}
    ({{ unscaled }} // {{ row_quantity }})
{%- endmacro %}

{#- Spark: the truncating quotient of the decimal(38, 0) is exact once the remainder (of the
    dividend's sign) is subtracted. -#}
{% macro spark__attempt_share_whole(unscaled, row_quantity) -%}
    cast(({{ unscaled }} - {{ unscaled }} % {{ row_quantity }}) / {{ row_quantity }} as decimal(38, 0))
{%- endmacro %}

{% macro attempt_share_rest(unscaled, row_quantity) -%}
    cast({{ unscaled }} % {{ row_quantity }} as bigint)
{%- endmacro %}

{% macro attempt_share(name, quantity, row_quantity) -%}
    {{- return(adapter.dispatch('attempt_share', 'tokenbill')(name, quantity, row_quantity)) -}}
{%- endmacro %}

{% macro default__attempt_share(name, quantity, row_quantity) -%}
    cast(
        cast(
            {{ name }}_whole * {{ quantity }}
            + case
                when abs({{ name }}_rest) <= 9223372036854775807 // {{ quantity }}
                    then {{ name }}_rest * {{ quantity }} // {{ row_quantity }}
                else cast({{ name }}_rest as hugeint) * {{ quantity }} // {{ row_quantity }}
            end
            as decimal(38, 0)
        ) * cast(0.000000000000000001 as decimal(38, 18))
        as decimal(38, 18)
    )
{%- endmacro %}

{#- Spark: `div` truncates as DuckDB's integer division does; the decimal(38, 0) fallback is
    exact as spark__attempt_share_whole is. -#}
{% macro spark__attempt_share(name, quantity, row_quantity) -%}
    {%- set scaled_rest -%}
        (cast({{ name }}_rest as decimal(38, 0)) * {{ quantity }})
    {%- endset -%}
    cast(
        cast(
            {{ name }}_whole * {{ quantity }}
            + case
                when abs({{ name }}_rest) <= 9223372036854775807 div {{ quantity }}
                    then ({{ name }}_rest * {{ quantity }}) div {{ row_quantity }}
                else ({{ scaled_rest }} - {{ scaled_rest }} % {{ row_quantity }}) / {{ row_quantity }}
            end
            as decimal(38, 0)
        ) * cast(0.000000000000000001 as decimal(38, 18))
        as decimal(38, 18)
    )
{%- endmacro %}
