{{
    config(
        full_refresh=false,
    )
}}

-- The frozen lines of finalized invoices. Append-only: an invoice is written here once, when
-- its grace period has passed (finalized_at = period end + invoice_grace_days), and never
-- changes afterwards. Later differences become rows of fct_invoice_adjustments. The exact
-- amounts are frozen; fct_invoice_line_items rounds the invoice from them (a deterministic
-- function of these lines and of the adjustments booked onto the invoice before it was
-- finalized, so the rounded amounts do not change either).
-- full_refresh=false: `dbt build --full-refresh` leaves it as it is (it would otherwise
-- re-freeze every invoice from today's data); a deliberate rebuild drops the table by hand.
-- A billing period held by unpriced usage (fct_invoice_holds) is not finalized: its invoices
-- stay drafts until the usage is priced and the month re-run.

with

computed as (

    select * from {{ ref('int_invoicing__computed_lines') }}

),

holds as (

    select distinct
        billing_period_start,
        billing_period_end
    from {{ ref('fct_invoice_holds') }}
    where {{ in_window('billing_period_start') }}

),

due as (

    select
        computed.*,
        {{ invoice_finalized_at('computed.billing_period_end') }} as finalized_at
    from computed
    where not exists (
        select 1 from holds
        where
            holds.billing_period_start = computed.billing_period_start
            and holds.billing_period_end = computed.billing_period_end
    )

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
