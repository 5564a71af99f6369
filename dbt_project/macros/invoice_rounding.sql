{#- The invoice rounding rule's arithmetic (the rule itself is fct_invoice_line_items). -#}

{#- An exact amount counted in minor units (cents, yen), still exact: 1.2345 USD -> 123.45. -#}
{% macro to_minor_units(amount, exponent) -%}
    cast({{ amount }} * cast(power(10, {{ exponent }}) as bigint) as decimal(38, 18))
{%- endmacro %}

{#- One minor unit of a currency as an exact decimal (USD 0.01, JPY 1, KWD 0.001). -#}
{% macro minor_unit(exponent) -%}
    cast(
        case {{ exponent }}
            when 0 then 1 when 1 then 0.1 when 2 then 0.01 when 3 then 0.001 when 4 then 0.0001
        end
        as decimal(38, 18)
    )
{%- endmacro %}
