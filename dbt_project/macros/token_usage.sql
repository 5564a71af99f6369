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
    cast(sum({{ m }}) as bigint) as {{ m }},
    {%- endfor %}
    {%- for m in long_context_measure_names() %}
    {%- if from_events %}
    cast(sum(case when input_tokens > {{ long_context_prompt_tokens() }} then {{ m }} else 0 end) as bigint)
        as long_context_{{ m }}{% if not loop.last %},{% endif %}
    {%- else %}
    cast(sum(long_context_{{ m }}) as bigint) as long_context_{{ m }}{% if not loop.last %},{% endif %}
    {%- endif %}
    {%- endfor %}
{%- endmacro %}

{#- A call whose prompt has more than this many tokens is priced at the provider's long-context
    rates, all of its tokens (the provider cost card's *_above_200k_per_token columns). The
    marts keep these calls' tokens apart (long_context_*) so that provider cost is computed
    from the hourly mart exactly. -#}
{% macro long_context_prompt_tokens() -%}
    200000
{%- endmacro %}

{% macro long_context_measure_names() -%}
    {{ return(["uncached_input_tokens", "cached_input_tokens", "cache_write_tokens",
               "output_tokens", "reasoning_tokens"]) }}
{%- endmacro %}

{% macro token_measure_names() -%}
    {{ return(["input_tokens", "cached_input_tokens", "cache_write_tokens", "uncached_input_tokens",
               "output_tokens", "reasoning_tokens", "total_tokens",
               "cache_write_5m_tokens", "cache_write_1h_tokens", "audio_input_tokens",
               "image_input_tokens", "audio_output_tokens", "image_output_tokens"]) }}
{%- endmacro %}
