{#- Models land in the schema named in their config (staging, marts), not <target>_<schema>:
    analysts query marts.fct_token_usage_daily whatever the target. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
