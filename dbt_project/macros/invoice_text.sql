{#- What a person reads on an invoice line: model names, quantities and prices as text. Display
    only: the amounts are the exact and rounded columns beside the description. -#}

{#- A model or selector pattern as people write it: claude-sonnet-4-5 -> Claude Sonnet 4.5,
    anthropic.claude-haiku-4-5-20251001-v1:0 -> Claude Haiku 4.5, gpt-4o-mini -> GPT-4o mini,
    gemini-2.5-flash -> Gemini 2.5 Flash, claude-* -> Claude models, * -> All models. -#}
{% macro model_display_name(model) -%}
    {{- return(adapter.dispatch('model_display_name', 'tokenbill')(model)) -}}
{%- endmacro %}

{% macro default__model_display_name(model) -%}
    case
        when {{ model }} = '*' then 'All models'
        else
            replace(
                array_to_string(
                    list_transform(
                        string_split(
                            trim(
                                regexp_replace(
                                    regexp_replace(
                                        regexp_replace({{ model }}, '^[a-z]+\.', ''),
                                        '-[0-9]{8}.*$', ''
                                    ),
                                    '([0-9])-([0-9])', '\1.\2', 'g'
                                ),
                                '-*'
                            ),
                            '-'
                        ),
                        w -> case
                            when w = 'gpt' then 'GPT'
                            when w = 'mini' then w
                            when regexp_matches(w, '^[a-z]+$') then upper(w[1]) || w[2:]
                            else w
                        end
                    ),
                    ' '
                ),
                'GPT ', 'GPT-'
            )
            || case when {{ model }} like '%*' then ' models' else '' end
    end
{%- endmacro %}

{#- What a meter counts, in words. -#}
{% macro meter_words(meter) -%}
    case {{ meter }}
        when 'uncached_input' then 'input tokens'
        when 'cached_input' then 'cached input tokens'
        when 'cache_write' then 'cache write tokens'
        when 'output' then 'output tokens'
        when 'reasoning' then 'reasoning tokens'
        when 'requests' then 'requests'
        else replace({{ meter }}, '_', ' ')
    end
{%- endmacro %}

{#- A count in the price's unit, to one decimal: 12437551 tokens per 1M -> 12.4M; below one
    unit, or for unit 1, the whole count with thousands separators (12,345). -#}
{% macro format_quantity(quantity, unit_size, unit) -%}
    {{- return(adapter.dispatch('format_quantity', 'tokenbill')(quantity, unit_size, unit)) -}}
{%- endmacro %}

{% macro default__format_quantity(quantity, unit_size, unit) -%}
    case
        when {{ unit_size }} <= 1 or abs({{ quantity }}) < {{ unit_size }}
            then format('{:,}', cast({{ quantity }} as bigint))
        else
            format('{:,}', cast(({{ quantity }} * 10 + {{ unit_size }} // 2) // {{ unit_size }} // 10 as bigint))
            || '.' || cast(({{ quantity }} * 10 + {{ unit_size }} // 2) // {{ unit_size }} % 10 as varchar)
            || {{ unit }}[-1]
    end
{%- endmacro %}

{#- A price with its currency: at least the currency's decimals, more only where the price
    has them ($15.00, $0.075, ¥150, ¥0.5). -#}
{% macro format_price(amount, exponent, currency) -%}
    {{- return(adapter.dispatch('format_price', 'tokenbill')(amount, exponent, currency)) -}}
{%- endmacro %}

{% macro default__format_price(amount, exponent, currency) -%}
    {%- set digits = "rtrim(rtrim(cast(cast(" ~ amount ~ " as decimal(38, 9)) as varchar), '0'), '.')" -%}
    case {{ currency }}
        when 'USD' then '$' when 'EUR' then '€' when 'GBP' then '£' when 'JPY' then '¥'
        else {{ currency }} || ' '
    end
    || case
        when {{ exponent }} = 0 then {{ digits }}
        when not contains({{ digits }}, '.') then {{ digits }} || '.' || repeat('0', {{ exponent }})
        else {{ digits }}
            || repeat('0', greatest({{ exponent }} - length(split_part({{ digits }}, '.', 2)), 0))
    end
{%- endmacro %}

{#- The same texts on Spark: its regex replacement names groups $1, its string literals escape
    a backslash, format_number groups thousands, div divides integers, right() is the last
    character. -#}
{% macro spark__model_display_name(model) -%}
    case
        when {{ model }} = '*' then 'All models'
        else
            replace(
                array_join(
                    transform(
                        split(
                            trim(
                                both '-*' from regexp_replace(
                                    regexp_replace(
                                        regexp_replace({{ model }}, '^[a-z]+[.]', ''),
                                        '-[0-9]{8}.*$', ''
                                    ),
                                    '([0-9])-([0-9])', '$1.$2'
                                )
                            ),
                            '-'
                        ),
                        w -> case
                            when w = 'gpt' then 'GPT'
                            when w = 'mini' then w
                            when w rlike '^[a-z]+$' then upper(substring(w, 1, 1)) || substring(w, 2)
                            else w
                        end
                    ),
                    ' '
                ),
                'GPT ', 'GPT-'
            )
            || case when {{ model }} like '%*' then ' models' else '' end
    end
{%- endmacro %}

{% macro spark__format_quantity(quantity, unit_size, unit) -%}
    case
        when {{ unit_size }} <= 1 or abs({{ quantity }}) < {{ unit_size }}
            then format_number(cast({{ quantity }} as bigint), 0)
        else
            format_number(cast(({{ quantity }} * 10 + {{ unit_size }} div 2) div {{ unit_size }} div 10 as bigint), 0)
            || '.' || cast(({{ quantity }} * 10 + {{ unit_size }} div 2) div {{ unit_size }} % 10 as string)
            || right({{ unit }}, 1)
    end
{%- endmacro %}

{% macro spark__format_price(amount, exponent, currency) -%}
    {#- Spark's cast of a decimal to string is scientific below 10^-6 (0 at scale 9 is
        '0E-9'): format_number writes every digit (grouped by commas, removed here). -#}
    {%- set digits = "trim(trailing '.' from trim(trailing '0' from replace(format_number(cast(" ~ amount ~ " as decimal(38, 9)), 9), ',', '')))" -%}
    case {{ currency }}
        when 'USD' then '$' when 'EUR' then '€' when 'GBP' then '£' when 'JPY' then '¥'
        else {{ currency }} || ' '
    end
    || case
        when {{ exponent }} = 0 then {{ digits }}
        when not contains({{ digits }}, '.') then {{ digits }} || '.' || repeat('0', {{ exponent }})
        else {{ digits }}
            || repeat('0', greatest({{ exponent }} - length(split_part({{ digits }}, '.', 2)), 0))
    end
{%- endmacro %}
