{{
    config(
        tags=["monthly"],
        pre_hook="{{ delete_window('usage_month') }}",
    )
}}

-- Revenue against what the usage cost at the providers' list prices (USD), per customer,
-- model and feature. Gross margin is given where the customer is billed in USD; for other
-- currencies revenue and cost are shown side by side (no FX conversion). A cost the card
-- does not know is null, never 0: the row's provider cost and margin are then null, and
-- revenue_with_unknown_cost says how much of the revenue it concerns.

with

rated as (

    select * from {{ ref('fct_rated_charges_monthly') }}
    where {{ in_window('usage_month') }}

),

unpriced as (

    select * from {{ ref('fct_unpriced_usage') }}
    where {{ in_window('usage_hour') }}

),

customers as (

    select * from {{ ref('dim_customers') }}

),

combined as (

    select
        usage_month,
        customer_id,
        model,
        feature,
        currency,
        amount as revenue,
        provider_cost,
        case when status <> 'success' then provider_cost else 0 end as failed_attempt_cost,
        cast(0 as decimal(38, 18)) as unpriced_cost,
        case when provider_cost is null then amount else 0 end as revenue_with_unknown_cost
    from rated

    union all

    select
        cast({{ dbt.date_trunc('month', 'unpriced.usage_hour') }} as date) as usage_month,
        unpriced.customer_id,
        unpriced.model,
        unpriced.feature,
        customers.currency,
        0 as revenue,
        unpriced.provider_cost,
        case when unpriced.status <> 'success' then unpriced.provider_cost else 0 end,
        unpriced.provider_cost,
        0
    from unpriced
    left join customers on unpriced.customer_id = customers.customer_id

)

select
    usage_month,
    customer_id,
    model,
    feature,
    currency,
    cast(sum(revenue) as decimal(38, 18)) as revenue,
    cast({{ known_sum('provider_cost') }} as decimal(38, 18)) as provider_cost,
    cast(
        case when currency = 'USD' then sum(revenue) - {{ known_sum('provider_cost') }} end
        as decimal(38, 18)
    ) as gross_margin,
    cast({{ known_sum('failed_attempt_cost') }} as decimal(38, 18))
        as failed_attempt_provider_cost,
    cast({{ known_sum('unpriced_cost') }} as decimal(38, 18)) as unpriced_provider_cost,
    cast(sum(revenue_with_unknown_cost) as decimal(38, 18)) as revenue_with_unknown_cost
from combined
group by usage_month, customer_id, model, feature, currency
