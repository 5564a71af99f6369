{{ config(schema='marts', materialized='view', tags=['monthly']) }}

-- The prepaid-wallet ledger as written by the Dagster asset billing/wallet_ledger: the
-- interface invoices read (credits applied = -sum(amount) of deductions per billing period,
-- top-up purchases = top_up entries).

select
    entry_id,
    wallet_id,
    customer_id,
    currency,
    grant_id,
    grant_kind,
    entry_type,
    cast(entry_ts as timestamp) as entry_ts,
    cast(usage_hour as timestamp) as usage_hour,
    cast(billing_period_start as timestamp) as billing_period_start,
    cast(amount as decimal(38, 18)) as amount,
    cast(grant_remaining_after as decimal(38, 18)) as grant_remaining_after,
    cast(wallet_balance_after as decimal(38, 18)) as wallet_balance_after
from {{ source('billing', 'wallet_ledger') }}
