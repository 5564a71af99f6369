{{
    config(
        materialized='incremental',
        incremental_strategy='append',
    )
}}

-- The frozen lines of finalized invoices. Append-only: an invoice is written here once, when
-- its grace period has passed (finalized_at = period end + invoice_grace_days), and never
-- changes afterwards. Later differences become rows of fct_invoice_adjustments. The exact
-- amounts are frozen; fct_invoice_line_items rounds the invoice from them (a deterministic
-- function of these lines and of the adjustments booked onto the invoice before it was
-- finalized, so the rounded amounts do not change either).

with

computed as (

    select * from {{ ref('int_invoicing__computed_lines') }}

),

due as (

    select
        computed.*,
        {{ dbt.dateadd('day', invoice_grace_days() | int, 'computed.billing_period_end') }}
            as finalized_at
    from computed

)

select
    invoice_id,
    subscription_id,
    customer_id,
    currency,
    cast(minor_unit_exponent as integer) as minor_unit_exponent,
    billing_period_start,
    billing_period_end,
    line_key,
    line_type,
    description,
    unit_description,
    quantity,
    unit_price,
    unit,
    amount_precise,
    cast(finalized_at as timestamp) as finalized_at
from due
where
    finalized_at <= {{ as_of() }}
    {% if is_incremental() %}
        and invoice_id not in (select invoice_id from {{ this }})
    {% endif %}
