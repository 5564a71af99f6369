{{ config(schema='marts', materialized=view_materialization(), tags=['monthly']) }}

-- Net prepaid credit used per wallet, subscription and billing period: the one number the
-- invoice's credits line reads. Deductions draw credit for positive hours; reversals give it
-- back for negative ones (a volume tier crossed, re-rating after late data), so
-- credits_used = deducted - reversed never exceeds the period's net charges. Entries belong
-- to the subscription active at their time.

with

ledger as (

    select * from {{ ref('fct_wallet_ledger') }}
    where entry_type in ('deduction', 'reversal', 'top_up')

),

subscriptions as (

    select * from {{ ref('dim_subscriptions') }}

),

attributed as (

    select
        ledger.*,
        subscriptions.subscription_id
    from ledger
    inner join subscriptions
        on
            ledger.customer_id = subscriptions.customer_id
            and {{ subscription_active_at('ledger.entry_ts', 'subscriptions') }}

)

select
    wallet_id,
    customer_id,
    subscription_id,
    currency,
    cast(billing_period_start as timestamp) as billing_period_start,
    cast(count(*) filter (where entry_type = 'deduction') as bigint) as deductions,
    cast(count(*) filter (where entry_type = 'reversal') as bigint) as reversals,
    cast(-sum(case when entry_type = 'deduction' then amount else 0 end) as decimal(38, 18))
        as deducted,
    cast(sum(case when entry_type = 'reversal' then amount else 0 end) as decimal(38, 18))
        as reversed,
    cast(-sum(case when entry_type in ('deduction', 'reversal') then amount else 0 end)
        as decimal(38, 18)) as credits_used,
    cast(sum(case when entry_type = 'top_up' then amount else 0 end) as decimal(38, 18))
        as topped_up
from attributed
group by all
