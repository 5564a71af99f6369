{{
    config(
        materialized='incremental',
        tags=["hourly"],
        pre_hook="{{ delete_window('usage_hour') }}",
    )
}}

-- The charge of each usage row is F(period quantity through it) - F(period quantity before
-- it), F being the price's period amount function after the included allowance. Summed over
-- a period, hourly charges equal F(period quantity) exactly; a volume tier crossed mid-period
-- gives a negative correction, by design. No rounding happens here.

with

priced as (

    select * from {{ ref('int_rating__priced_usage') }}
    where unpriced_reason is null and {{ in_window('usage_hour') }}

),

tiers as (

    select * from {{ ref('dim_price_tiers') }}

),

provider_costs as (

    select * from {{ ref('int_rating__provider_costs') }}

),

bounds as (

    select
        *,
        greatest(period_quantity_before - included_tokens, 0) as chargeable_before,
        greatest(period_quantity_before + billable_quantity - included_tokens, 0)
            as chargeable_through
    from priced

),

tiered_amounts as (

    select
        bounds.usage_hour,
        bounds.customer_id,
        bounds.provider,
        bounds.model,
        bounds.feature,
        bounds.environment,
        bounds.status,
        bounds.meter,
        sum(
            case bounds.pricing_model
                when 'volume' then
                    {{ volume_value('bounds.chargeable_through', 'tiers') }}
                    - {{ volume_value('bounds.chargeable_before', 'tiers') }}
                else
                    {{ graduated_amount('bounds.chargeable_before', 'bounds.chargeable_through', 'tiers') }}
            end
        ) as tiered_amount
    from bounds
    inner join tiers
        on bounds.price_id = tiers.price_id and bounds.price_version = tiers.price_version
    group by all

),

charged as (

    select
        bounds.*,
        case
            when bounds.pricing_model = 'package' and bounds.package_rounding = 'up'
                then (
                    {{ int_div('bounds.chargeable_through', 'bounds.package_size_tokens', 'up') }}
                    - {{ int_div('bounds.chargeable_before', 'bounds.package_size_tokens', 'up') }}
                ) * bounds.package_price
            when bounds.pricing_model = 'package'
                then (
                    {{ int_div('bounds.chargeable_through', 'bounds.package_size_tokens') }}
                    - {{ int_div('bounds.chargeable_before', 'bounds.package_size_tokens') }}
                ) * bounds.package_price
            else coalesce(tiered_amounts.tiered_amount, 0)
        end as amount
    from bounds
    left join tiered_amounts
        on
            bounds.usage_hour = tiered_amounts.usage_hour
            and bounds.customer_id = tiered_amounts.customer_id
            and bounds.provider is not distinct from tiered_amounts.provider
            and bounds.model = tiered_amounts.model
            and bounds.feature is not distinct from tiered_amounts.feature
            and bounds.environment is not distinct from tiered_amounts.environment
            and bounds.status = tiered_amounts.status
            and bounds.meter = tiered_amounts.meter

)

select
    -- period
    charged.usage_hour,
    cast(charged.billing_period_start as timestamp) as billing_period_start,

    -- who and what
    charged.customer_id,
    charged.subscription_id,
    charged.plan_id,
    charged.price_id,
    cast(charged.price_version as integer) as price_version,
    charged.meter,
    charged.provider,
    charged.model,
    charged.feature,
    charged.environment,
    charged.status,

    -- measures
    cast(charged.quantity as bigint) as quantity,
    cast(charged.billable_quantity as bigint) as billable_quantity,
    cast(charged.period_quantity_before as bigint) as period_quantity_before,
    cast(charged.amount as decimal(38, 18)) as amount,
    charged.currency,
    cast(coalesce(provider_costs.provider_cost, 0) as decimal(38, 18)) as provider_cost,
    coalesce(provider_costs.has_card, false) as has_provider_cost
from charged
left join provider_costs
    on
        charged.usage_hour = provider_costs.usage_hour
        and charged.customer_id = provider_costs.customer_id
        and charged.provider is not distinct from provider_costs.provider
        and charged.model = provider_costs.model
        and charged.feature is not distinct from provider_costs.feature
        and charged.environment is not distinct from provider_costs.environment
        and charged.status = provider_costs.status
        and charged.meter = provider_costs.meter
