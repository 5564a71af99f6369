{{ config(schema='marts', materialized=view_materialization(), tags=['monthly']) }}

-- The prepaid-wallet ledger as written by the Dagster asset billing/wallet_ledger: the
-- interface of the wallet marts (invoices read the net credit used per subscription and period
-- from fct_wallet_credits, and top-up purchases from the top_up entries here).

select
    entry_id,
    wallet_id,
    customer_id,
    currency,
    grant_id,
    grant_kind,
    entry_type,
    cast(entry_ts as timestamp) as entry_ts,
    cast(entry_order as integer) as entry_order,
    cast(usage_hour as timestamp) as usage_hour,
    cast(billing_period_start as timestamp) as billing_period_start,
    cast(amount as decimal(38, 18)) as amount,
    cast(grant_remaining_after as decimal(38, 18)) as grant_remaining_after,
    cast(wallet_balance_after as decimal(38, 18)) as wallet_balance_after
from {{ source('billing', 'wallet_ledger') }}
