{{ config(schema='marts', materialized=view_materialization(), tags=['monthly']) }}

-- Credit runway per wallet and UTC day: how many whole days the balance at day end lasts at
-- the trailing burn rate, the net credit used (deducted - reversed) over the last
-- runway_burn_days (7) days ending with the day, divided by those days (fewer in a wallet's
-- first days). runway_days = floor(balance * days / burned), exact (no floating point); null
-- when nothing was burned. A wallet whose runway_days is below its low_runway_days
-- (wallets.yml) is low; fct_billing_alerts alerts on the day it becomes low.

{% set burn_days = var('runway_burn_days', 7) | int %}

with

balances as (

    select * from {{ ref('fct_wallet_balances') }}

),

wallets as (

    select * from {{ source('wallet_catalog', 'wallets') }}

),

burn as (

    select
        *,
        sum(deducted - reversed) over burn_window as burned,
        count(*) over burn_window as burn_days
    from balances
    window burn_window as (
        partition by wallet_id order by balance_date
        rows between {{ burn_days - 1 }} preceding and current row
    )

),

runway as (

    select
        burn.*,
        wallets.low_runway_days,
        case
            when burn.burned > 0
                then {{ amount_quotient('burn.balance_at_day_end', 'burn.burned', 'burn.burn_days') }}
        end as runway_days
    from burn
    inner join wallets on burn.wallet_id = wallets.wallet_id

)

select
    balance_date,
    wallet_id,
    customer_id,
    currency,
    balance_at_day_end,
    cast(burn_days as integer) as burn_days,
    cast(burned as decimal(38, 18)) as burned,
    case when burned > 0 then {{ prorate('burned', 1, 'burn_days') }} end as daily_burn_rate,
    cast(runway_days as bigint) as runway_days,
    cast(balance_date + cast(runway_days as integer) as date) as covered_through,
    cast(low_runway_days as integer) as low_runway_days,
    coalesce(runway_days < low_runway_days, false) as is_low_runway
from runway
