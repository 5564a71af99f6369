{#- The raw, catalog and wallet sources on Spark (SPARK.md): each source table is a Parquet
    table over the lake, `{lake_root}/{schema}/{table}/` (any file below it, e.g. one directory
    per partition hour, read recursively), with the columns and types its _*sources.yml
    declares (DuckDB names translated by spark_type). `dbt run-operation create_lake_sources
    --target spark --vars '{lake_root: ...}'` (or TOKENBILL_LAKE_ROOT) creates the missing
    tables and refreshes the file listing of the existing ones (run it after the lake
    changes); the DuckDB warehouse has its own raw tables, so there it does nothing. -#}
{% macro create_lake_sources() -%}
    {{- return(adapter.dispatch('create_lake_sources', 'tokenbill')()) -}}
{%- endmacro %}

{% macro default__create_lake_sources() -%}
    {{- log('create_lake_sources: the ' ~ target.type ~ ' warehouse holds its own raw tables; nothing to do', info=true) -}}
{%- endmacro %}

{% macro spark__create_lake_sources() -%}
    {%- set lake_root = var('lake_root', env_var('TOKENBILL_LAKE_ROOT', '')) -%}
    {%- if not lake_root -%}
        {{- exceptions.raise_compiler_error(
            'create_lake_sources: no lake root; set the lake_root var or TOKENBILL_LAKE_ROOT to the'
            ~ ' directory or s3a:// prefix the ingestion writes (SPARK.md)') -}}
    {%- endif -%}
    {%- for source in graph.sources.values() if source.columns -%}
        {%- set location = lake_root.rstrip('/') ~ '/' ~ source.schema ~ '/' ~ source.identifier -%}
        {%- do run_query('create schema if not exists ' ~ source.schema) -%}
        {%- set ddl -%}
            create table if not exists {{ source.schema }}.{{ source.identifier }} (
            {%- for column in source.columns.values() %}
                {{ column.name }} {{ spark_type(column.data_type) }}{% if not loop.last %},{% endif %}
            {%- endfor %}
            )
            using parquet
            options (recursiveFileLookup 'true')
            location '{{ location }}'
        {%- endset -%}
        {%- do run_query(ddl) -%}
        {%- do run_query('refresh table ' ~ source.schema ~ '.' ~ source.identifier) -%}
        {{- log('create_lake_sources: ' ~ source.schema ~ '.' ~ source.identifier ~ ' over ' ~ location, info=true) -}}
    {%- endfor -%}
{%- endmacro %}

{#- A DuckDB column type as Spark names it: varchar -> string, varchar[] -> array<string>;
    the rest (bigint, integer, boolean, date, timestamp, decimal(p,s)) are spelled alike. -#}
{% macro spark_type(data_type) -%}
    {%- set t = data_type | lower | trim -%}
    {%- if t.endswith('[]') -%}
        array<{{ spark_type(t[:-2]) }}>
    {%- elif t in ('varchar', 'text', 'string') -%}
        string
    {%- elif t == 'json' -%}
        string
    {%- else -%}
        {{ t }}
    {%- endif -%}
{%- endmacro %}
