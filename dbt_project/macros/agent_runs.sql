{#- Helpers of the agent-run marts (fct_agent_run_costs, fct_request_costs,
    fct_retry_waste_monthly) and of the attempt costs they aggregate
    (int_agent_runs__attempt_costs). -#}

{#- Hours an agent run (or a request group) may span: the run marts read this many hours of
    events before and after their window, so a run touched by the window is re-aggregated
    from all of its attempts. A run longer than this is aggregated from the part that falls in
    the window +- this many hours. -#}
{% macro agent_run_max_hours() -%}
    {{- var('agent_run_max_hours', 24) -}}
{%- endmacro %}

{#- The id of an attempt's run and of its request: the trace id and the request group id, or
    the event's own id (prefixed event:) when the producer sent none. -#}
{% macro run_id(alias='') -%}
    coalesce({{ alias }}trace_id, 'event:' || {{ alias }}event_id)
{%- endmacro %}

{% macro request_id(alias='') -%}
    coalesce({{ alias }}request_group_id, 'event:' || {{ alias }}event_id)
{%- endmacro %}

{#- A map of key -> value over a group's rows (one row per key), its keys in order: the
    run marts' model_calls_by_model. DuckDB builds it from two ordered lists; Spark from its
    sorted (key, value) structs. -#}
{% macro map_agg(key, value) -%}
    {{- adapter.dispatch('map_agg', 'tokenbill')(key, value) -}}
{%- endmacro %}

{% macro default__map_agg(key, value) -%}
    map(list({{ key }} order by {{ key }}), list({{ value }} order by {{ key }}))
{%- endmacro %}

{% macro spark__map_agg(key, value) -%}
    map_from_entries(array_sort(collect_list(struct({{ key }}, {{ value }}))))
{%- endmacro %}

{#- A map of one entry (key -> value), the type map_agg makes of a group of one row. -#}
{% macro map_of_one(key, value) -%}
    {{- adapter.dispatch('map_of_one', 'tokenbill')(key, value) -}}
{%- endmacro %}

{% macro default__map_of_one(key, value) -%}
    map([{{ key }}], [{{ value }}])
{%- endmacro %}

{% macro spark__map_of_one(key, value) -%}
    map({{ key }}, {{ value }})
{%- endmacro %}

{#- Pre-hook of the run marts (delete+insert on their key): a stored run or request whose
    span overlaps the window and none of whose raw lines is left in the read range (its
    objects were removed or replaced) is deleted; every other run the window touches is
    replaced by the model's insert. key: the mart's id column; raw_key: the same id computed
    from a raw line (alias raw). -#}
{% macro delete_vanished(key, raw_key) -%}
    {{- adapter.dispatch('delete_vanished', 'tokenbill')(key, raw_key) -}}
{%- endmacro %}

{% macro default__delete_vanished(key, raw_key) -%}
    {%- if is_incremental() -%}
        {%- set hours = agent_run_max_hours() | int -%}
        delete from {{ this }}
        where
            first_event_at < {{ window_end() }}
            and last_event_at >= {{ window_start() }}
            and {{ key }} not in (
                select {{ raw_key }}
                from {{ source('tokenbill_raw', 'usage_events') }} as raw
                where
                    raw.partition_hour >= {{ dbt.dateadd('hour', -hours, window_start()) }}
                    and raw.partition_hour < {{ dbt.dateadd('hour', hours, window_end()) }}
            )
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{#- Spark (macros/portable/agent_runs.sql): the run marts overwrite whole days of runs
    (insert_overwrite). A day that the build produces no run for would keep its old partition
    (a run a late attempt moved to an earlier day would then be stored twice, a vanished one
    kept): the stored days of the range are dropped first, so each is exactly what the build
    produces, as DuckDB's delete+insert leaves it. Not atomic: between the drop and the insert a
    reader misses those days, and a failed insert leaves them empty until the next run. As
    spark__delete_window, a run mart on Spark still on another strategy is refused. -#}
{% macro spark__delete_vanished(key, raw_key) -%}
    {%- set guard = spark__delete_window('first_event_date') -%}
    {%- if not (execute and is_incremental()) -%}
        {{- return(guard) -}}
    {%- endif -%}
    {%- set stored_days -%}
        select distinct cast(first_event_date as string) as day
        from {{ this }}
        where {{ agent_runs_in_days('first_event_date') }}
        order by day
    {%- endset -%}
    {%- set days = run_query(stored_days).columns[0].values() -%}
    {%- if days | length == 0 -%}
        {{- return(guard) -}}
    {%- endif -%}
    alter table {{ this }} drop if exists
    {%- for day in days %}
        partition (first_event_date = '{{ day }}'){% if not loop.last %},{% endif %}
    {%- endfor %}
{%- endmacro %}

{#- floor(numerator * multiplier / denominator) of two decimal(38, 18) amounts, exactly, as a
    whole number (hugeint), for a positive denominator: DuckDB's decimal division returns a
    double, so the division is done on the amounts' unscaled integers (their digits without
    the point). -#}
{% macro whole_quotient(numerator, denominator, multiplier=1) -%}
    (
        {{ unscaled_hugeint(numerator) }} * {{ multiplier }}
        // {{ unscaled_hugeint(denominator) }}
    )
{%- endmacro %}
