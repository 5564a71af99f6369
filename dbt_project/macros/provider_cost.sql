{#- Provider cost is unknown (null) where the cost card has no price for a model, never 0.
    A sum of provider costs is known only if every summed cost is: plain sum() would skip the
    nulls and show a partial cost as if it were the whole. -#}

{% macro known_sum(expression) -%}
    case when count(*) = count({{ expression }}) then sum({{ expression }}) end
{%- endmacro %}
