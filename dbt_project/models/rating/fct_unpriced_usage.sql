{{
    config(
        tags=["hourly"],
        pre_hook="{{ delete_window('usage_hour') }}",
    )
}}

-- Billable usage that no price rates: never priced at zero silently. The test
-- all_usage_is_priced fails (an ERROR check in Dagster) until the catalog covers it; re-running
-- the hours after fixing the catalog prices it and empties this table for them.
-- Reasoning and request meters are charged only where a price exists, so they never land here
-- for want of a price.

with

unpriced as (

    select * from {{ ref('int_rating__priced_usage') }}
    where {{ is_unpriced_usage() }} and {{ in_window('usage_hour') }}

)

select
    unpriced.usage_hour,
    unpriced.customer_id,
    unpriced.subscription_id,
    unpriced.plan_id,
    unpriced.meter,
    unpriced.provider,
    unpriced.model,
    unpriced.feature,
    unpriced.environment,
    unpriced.status,
    cast(unpriced.quantity as bigint) as quantity,
    unpriced.unpriced_reason,
    unpriced.ambiguous_price_ids,
    cast(unpriced.provider_cost as decimal(38, 18)) as provider_cost
from unpriced
