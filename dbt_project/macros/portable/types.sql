{#- Column types on Spark. The contracts and sources declare DuckDB's names (varchar,
    varchar[]); Spark wants string and array<string> (spark_type, lake_sources.sql). dbt casts
    through dbt.cast when it checks a contract (the empty query of get_empty_schema_sql), so the
    project's spark__cast translates the type there and wherever a model casts via dbt.cast;
    the DuckDB cast is dbt's own, unchanged. -#}
{% macro spark__cast(field, type) -%}
    cast({{ field }} as {{ spark_type(type) }})
{%- endmacro %}

{#- A string type: varchar on DuckDB (today's SQL), string on Spark. -#}
{% macro string_type() -%}
    {{- return(adapter.dispatch('string_type', 'tokenbill')()) -}}
{%- endmacro %}

{% macro default__string_type() -%}varchar{%- endmacro %}

{% macro spark__string_type() -%}string{%- endmacro %}
