{{ config(schema='marts', materialized=view_materialization(), tags=['monthly']) }}

-- The balance identity per wallet: grants + top-ups = credit used (deductions - reversals)
-- + expiries + the balance after the wallet's last entry (difference must be 0), and every
-- entry's sign matches its type (sign_errors must be 0). Entries are ordered as the ledger
-- booked them: by entry_ts, then entry_order.

with

ledger as (

    select * from {{ ref('fct_wallet_ledger') }}

),

ordered as (

    select
        *,
        row_number() over (
            partition by wallet_id
            order by entry_ts desc, entry_order desc
        ) as from_end
    from ledger

),

totals as (

    select
        wallet_id,
        customer_id,
        currency,
        count(*) as entries,
        sum(case when entry_type = 'grant' then amount else 0 end) as granted,
        sum(case when entry_type = 'top_up' then amount else 0 end) as topped_up,
        -sum(case when entry_type = 'deduction' then amount else 0 end) as deducted,
        sum(case when entry_type = 'reversal' then amount else 0 end) as reversed,
        -sum(case when entry_type = 'expiry' then amount else 0 end) as expired,
        max(case when from_end = 1 then wallet_balance_after end) as balance,
        count(*) filter (
            where
            (entry_type in ('grant', 'top_up', 'reversal') and amount <= 0)
            or (entry_type in ('deduction', 'expiry') and amount >= 0)
        ) as sign_errors
    from ordered
    group by all

)

select
    wallet_id,
    customer_id,
    currency,
    cast(entries as bigint) as entries,
    cast(granted as decimal(38, 18)) as granted,
    cast(topped_up as decimal(38, 18)) as topped_up,
    cast(deducted as decimal(38, 18)) as deducted,
    cast(reversed as decimal(38, 18)) as reversed,
    cast(deducted - reversed as decimal(38, 18)) as credits_used,
    cast(expired as decimal(38, 18)) as expired,
    cast(balance as decimal(38, 18)) as balance,
    cast(granted + topped_up - (deducted - reversed) - expired - balance as decimal(38, 18))
        as difference,
    cast(sign_errors as bigint) as sign_errors
from totals
