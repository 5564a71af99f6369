{{ config(schema='marts', materialized=view_materialization(), tags=['monthly']) }}

-- One row per wallet and UTC day, from the wallet's first entry to the last day the ledger
-- has booked: the day's movements, the balance at day end (midnight after the day), and the
-- credit that would expire within 30 days of that instant if not used.

with

ledger as (

    select * from {{ ref('fct_wallet_ledger') }}

),

grants as (

    select * from {{ source('wallet_catalog', 'wallet_grants') }}

),

span as (

    select
        wallet_id,
        customer_id,
        currency,
        cast(min(cast(entry_ts as date)) as timestamp) as first_day
    from ledger
    group by all

),

last_day as (

    select cast(max(cast(entry_ts as date)) as timestamp) as last_day from ledger

),

day_series as (

    select
        span.wallet_id,
        span.customer_id,
        span.currency,
        {{ unnest_series('span.first_day', 'last_day.last_day', 'interval 1 day') }} as day_start
    from span
    cross join last_day

),

days as (

    select
        wallet_id,
        customer_id,
        currency,
        cast(day_start as date) as balance_date,
        cast(day_start + interval 1 day as timestamp) as day_end
    from day_series

),

daily as (

    select
        wallet_id,
        cast(entry_ts as date) as balance_date,
        sum(case when entry_type = 'grant' then amount else 0 end) as granted,
        sum(case when entry_type = 'top_up' then amount else 0 end) as topped_up,
        -sum(case when entry_type = 'deduction' then amount else 0 end) as deducted,
        sum(case when entry_type = 'reversal' then amount else 0 end) as reversed,
        -sum(case when entry_type = 'expiry' then amount else 0 end) as expired,
        sum(amount) as amount
    from ledger
    group by all

),

-- Grants expiring in [day end, day end + 30 days): what is left of each at day end.
expiring as (

    select
        days.wallet_id,
        days.balance_date,
        grants.grant_id,
        coalesce(sum(ledger.amount), 0) as remaining
    from days
    inner join grants
        on
            days.wallet_id = grants.wallet_id
            and grants.expires_at >= days.day_end
            and grants.expires_at < days.day_end + interval 30 day
    left join ledger
        on
            days.wallet_id = ledger.wallet_id
            and grants.grant_id = ledger.grant_id
            and ledger.entry_ts < days.day_end
    group by all

),

expiring_by_day as (

    select wallet_id, balance_date, sum(remaining) as expiring_within_30_days
    from expiring
    group by all

)

select
    days.balance_date,
    days.wallet_id,
    days.customer_id,
    days.currency,
    cast(coalesce(daily.granted, 0) as decimal(38, 18)) as granted,
    cast(coalesce(daily.topped_up, 0) as decimal(38, 18)) as topped_up,
    cast(coalesce(daily.deducted, 0) as decimal(38, 18)) as deducted,
    cast(coalesce(daily.reversed, 0) as decimal(38, 18)) as reversed,
    cast(coalesce(daily.expired, 0) as decimal(38, 18)) as expired,
    cast(coalesce(daily.amount, 0) as decimal(38, 18)) as amount,
    cast(
        sum(coalesce(daily.amount, 0)) over (
            partition by days.wallet_id order by days.balance_date
            rows between unbounded preceding and current row
        ) as decimal(38, 18)
    ) as balance_at_day_end,
    cast(coalesce(expiring_by_day.expiring_within_30_days, 0) as decimal(38, 18))
        as expiring_within_30_days
from days
left join daily
    on days.wallet_id = daily.wallet_id and days.balance_date = daily.balance_date
left join expiring_by_day
    on
        days.wallet_id = expiring_by_day.wallet_id
        and days.balance_date = expiring_by_day.balance_date
