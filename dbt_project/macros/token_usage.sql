{#- The grain and measures shared by the three token-usage marts. -#}

{% macro token_usage_dimensions() -%}
    customer_id,
    subscription_id,
    plan,
    feature,
    provider,
    model,
    environment,
    status
{%- endmacro %}

{#- Sums of the measures. from_events: aggregate events (count them), else re-aggregate a
    finer mart (sum its event_count). Sums are cast back to bigint: DuckDB's sum(bigint) is
    hugeint, which the enforced contracts do not accept. -#}
{% macro token_usage_measures(from_events=false) -%}
    {%- if from_events %}
    cast(count(*) as bigint) as event_count,
    {%- else %}
    cast(sum(event_count) as bigint) as event_count,
    {%- endif %}
    {%- for m in token_measure_names() %}
    cast(sum({{ m }}) as bigint) as {{ m }}{% if not loop.last %},{% endif %}
    {%- endfor %}
{%- endmacro %}

{% macro token_measure_names() -%}
    {{ return(["input_tokens", "cached_input_tokens", "cache_write_tokens", "uncached_input_tokens",
               "output_tokens", "reasoning_tokens", "total_tokens"]) }}
{%- endmacro %}
