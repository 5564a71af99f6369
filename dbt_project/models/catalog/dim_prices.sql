-- One row per price version: what a price charges and when it is in force.
with

prices as (

    select * from {{ source('catalog', 'prices') }}

),

versions as (

    select * from {{ source('catalog', 'price_versions') }}

)

select
    prices.price_id,
    versions.price_version,
    prices.scope,
    prices.plan_id,
    prices.customer_id,
    prices.meter,
    prices.selector_model,
    prices.model_like,
    prices.provider,
    prices.feature,
    prices.environment,
    prices.specificity,
    prices.pricing_model,
    prices.unit,
    prices.unit_size,
    prices.included_tokens,
    prices.package_size_tokens,
    prices.package_rounding,
    versions.package_price,
    versions.markup,
    versions.floor_per_token,
    versions.effective_from,
    versions.effective_to,
    prices.description
from prices
inner join versions on prices.price_id = versions.price_id
