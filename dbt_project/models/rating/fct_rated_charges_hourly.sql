{{
    config(
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

-- Each price version's tiers as one list: every usage row computes its tiered amount from
-- the list of its price (a few tiers), with no join of rows to tiers and back.
tier_lists as (

    select
        price_id,
        price_version,
        list(
            struct_pack(
                lower_tokens := lower_tokens,
                upper_tokens := upper_tokens,
                unit_price_per_token := unit_price_per_token,
                flat_fee := flat_fee
            )
        ) as tiers
    from {{ ref('dim_price_tiers') }}
    group by all

),

bounds as (

    select
        priced.*,
        tier_lists.tiers,
        greatest(priced.period_quantity_before - priced.included_tokens, 0) as chargeable_before,
        greatest(priced.period_quantity_before + priced.billable_quantity - priced.included_tokens, 0)
            as chargeable_through
    from priced
    left join tier_lists
        on priced.price_id = tier_lists.price_id and priced.price_version = tier_lists.price_version

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
            when bounds.pricing_model = 'volume'
                then coalesce(list_sum(list_transform(bounds.tiers, tier ->
                    {{ volume_value('bounds.chargeable_through', 'tier') }}
                    - {{ volume_value('bounds.chargeable_before', 'tier') }}
                )), 0)
            else coalesce(list_sum(list_transform(bounds.tiers, tier ->
                {{ graduated_amount('bounds.chargeable_before', 'bounds.chargeable_through', 'tier') }}
            )), 0)
        end as amount
    from bounds

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
    cast(charged.provider_cost as decimal(38, 18)) as provider_cost,
    charged.has_provider_cost
from charged
