-- One row per subscription and spend cap in force for it, per billing period: the cap of the
-- whole subscription (price_id null; a customer override's max_spend replaces the plan's) and
-- the caps of single prices (a price belongs to one plan or override, so it caps where it rates).

with

subscriptions as (

    select * from {{ ref('dim_subscriptions') }}

),

caps as (

    select * from {{ source('catalog', 'spend_caps') }}

),

subscription_caps as (

    select
        subscriptions.subscription_id,
        subscriptions.customer_id,
        cast(null as {{ string_type() }}) as price_id,
        coalesce(customer_caps.max_spend, plan_caps.max_spend) as max_spend,
        case when customer_caps.max_spend is not null then 'customer' else 'plan' end as scope
    from subscriptions
    left join caps as customer_caps
        on
            customer_caps.scope = 'customer'
            and customer_caps.price_id is null
            and subscriptions.customer_id = customer_caps.customer_id
    left join caps as plan_caps
        on
            plan_caps.scope = 'plan'
            and plan_caps.price_id is null
            and subscriptions.plan_id = plan_caps.plan_id
    where coalesce(customer_caps.max_spend, plan_caps.max_spend) is not null

),

price_caps as (

    select
        subscriptions.subscription_id,
        subscriptions.customer_id,
        caps.price_id,
        caps.max_spend,
        caps.scope
    from subscriptions
    inner join caps
        on
            caps.price_id is not null
            and (
                (caps.scope = 'plan' and subscriptions.plan_id = caps.plan_id)
                or (caps.scope = 'customer' and subscriptions.customer_id = caps.customer_id)
            )

)

select * from subscription_caps
union all
select * from price_caps
