{#- Fixtures of the dbt unit tests (models/*/_<folder>__unit_tests.yml) for inputs that are
    ephemeral models: dbt needs those given as SQL (`format: sql`) with every column the
    tested model reads. Each macro writes such a select from a few values per row, the rest
    set to what the scenario does not care about. Used by unit tests only. -#}

{#- Rows of int_rating__priced_usage, all priced, for one price and meter: `price` sets the
    price's columns (price_id, pricing_model, included_tokens, package_size_tokens,
    package_rounding, package_price, markup, floor_per_token), each row its usage_hour, quantity and
    period_quantity_before (billable_quantity = quantity unless given). -#}
{% macro unit_test_priced_usage(price, rows) -%}
    {%- for row in rows %}
    select
        cast('{{ row.usage_hour }}' as timestamp) as usage_hour,
        cast('{{ row.get("billing_period_start", "2026-10-01 00:00:00") }}' as timestamp)
            as billing_period_start,
        'c' as customer_id,
        's' as subscription_id,
        'pl' as plan_id,
        '{{ price.price_id }}' as price_id,
        1 as price_version,
        'output' as meter,
        'p' as provider,
        'm' as model,
        cast(null as {{ string_type() }}) as feature,
        cast(null as {{ string_type() }}) as environment,
        'success' as status,
        '{{ price.get("currency", "USD") }}' as currency,
        '{{ price.pricing_model }}' as pricing_model,
        cast({{ price.get("included_tokens", 0) }} as bigint) as included_tokens,
        cast({{ price.get("package_size_tokens", "null") }} as bigint) as package_size_tokens,
        {% if price.package_rounding is defined -%}
        '{{ price.package_rounding }}'
        {%- else -%}
        cast(null as {{ string_type() }})
        {%- endif %} as package_rounding,
        cast({{ price.get("package_price", "null") }} as decimal(38, 18)) as package_price,
        cast({{ price.get("markup", "null") }} as decimal(38, 18)) as markup,
        cast({{ price.get("floor_per_token", "null") }} as decimal(38, 18)) as floor_per_token,
        cast({{ row.quantity }} as {{ sum_of_bigint_type() }}) as quantity,
        cast({{ row.get("billable_quantity", row.quantity) }} as {{ sum_of_bigint_type() }}) as billable_quantity,
        cast({{ row.period_quantity_before }} as {{ sum_of_bigint_type() }}) as period_quantity_before,
        cast(null as decimal(38, 18)) as provider_cost,
        false as has_provider_cost,
        cast(null as {{ string_type() }}) as unpriced_reason
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
{%- endmacro %}

{#- Rows of int_invoicing__computed_lines, all on one invoice (inv_s) in `currency` with
    minor-unit `exponent`: each row its line_key and amount_precise, its line_type the
    line_key's prefix (usage, platform_fee, minimum_true_up, credits, ...). -#}
{% macro unit_test_computed_lines(currency, exponent, rows) -%}
    {%- for row in rows %}
    select
        'inv_s' as invoice_id,
        's' as subscription_id,
        'c' as customer_id,
        '{{ currency }}' as currency,
        {{ exponent }} as minor_unit_exponent,
        timestamp '2026-10-01 00:00:00' as billing_period_start,
        timestamp '2026-11-01 00:00:00' as billing_period_end,
        '{{ row.line_key }}' as line_key,
        '{{ row.line_key.split(":")[0] }}' as line_type,
        '{{ row.line_key }}' as description,
        'unit' as unit_description,
        cast(1 as bigint) as quantity,
        cast(null as decimal(38, 18)) as unit_price,
        cast(null as {{ string_type() }}) as unit,
        cast({{ row.amount_precise }} as decimal(38, 18)) as amount_precise
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
{%- endmacro %}
