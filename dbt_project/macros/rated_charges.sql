{#- Grain and measures of the rated-charge rollups (daily, monthly; macros/rollup.sql). -#}

{% macro rated_charge_dimensions() -%}
    billing_period_start,
    customer_id,
    subscription_id,
    plan_id,
    price_id,
    price_version,
    meter,
    provider,
    model,
    feature,
    environment,
    status,
    currency
{%- endmacro %}

{% macro rated_charge_measures() -%}
    cast(sum(quantity) as bigint) as quantity,
    cast(sum(billable_quantity) as bigint) as billable_quantity,
    cast(sum(amount) as decimal(38, 18)) as amount,
    cast({{ known_sum('provider_cost') }} as decimal(38, 18)) as provider_cost
{%- endmacro %}
