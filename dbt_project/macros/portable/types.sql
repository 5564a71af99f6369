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

{#- A unit test's fixture value on Spark (dbt casts each one with safe_cast). A map is written
    in the YAML as DuckDB reads a map from text, "{a=2, b=1}", so one fixture serves both
    engines: Spark cannot cast text to a map (dbt-spark's own safe_cast strips the quotes and
    expects a Spark expression), so such a literal becomes str_to_map of its entries cast to
    the map's type. Any other value is cast as dbt-spark casts it. -#}
{% macro spark__safe_cast(field, type) -%}
    {%- set complex = type.lower().startswith(('struct', 'array', 'map')) -%}
    {%- if field is string and type.lower().startswith('map') and field.startswith("'{")
          and field.endswith("}'") -%}
        {%- set entries = field[2:-2] -%}
        {%- if entries.strip() == '' -%}
            cast(map() as {{ type }})
        {%- else -%}
            cast(str_to_map('{{ entries }}', ', ', '=') as {{ type }})
        {%- endif -%}
    {%- elif field is string and complex -%}
        cast({{ field.strip('"').strip("'") }} as {{ type }})
    {%- else -%}
        cast({{ field }} as {{ type }})
    {%- endif -%}
{%- endmacro %}
