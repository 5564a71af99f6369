{#- The window's replacement on Spark (SPARK.md): Parquet tables cannot delete, so a windowed
    model is partitioned by its period and built with insert_overwrite (dynamic: only the
    partitions the run produces are replaced); delete_window has nothing to do. A model still
    on append there would double its window on a rerun: refuse it. -#}
{% macro spark__delete_window(column) -%}
    {%- if is_incremental() and config.get('incremental_strategy') != 'insert_overwrite' -%}
        {{- exceptions.raise_compiler_error(
            this ~ ': an incremental model on Spark replaces its window with insert_overwrite'
            ~ ' partitioned by ' ~ column ~ '; set incremental_strategy and partition_by for the'
            ~ ' spark target in dbt_project.yml (SPARK.md)') -}}
    {%- endif -%}
    select 1
{%- endmacro %}
