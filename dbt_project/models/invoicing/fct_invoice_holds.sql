{{
    config(
        pre_hook="{{ delete_window('billing_period_start') }}",
    )
}}

-- The billing periods the monthly close refuses to finalize: a period due for finalization
-- (its end plus the grace period has passed, as of the run) during which some usage is still
-- unpriced (fct_unpriced_usage: a customer or subscription missing from the catalog, no price,
-- an ambiguous price). Any such usage holds the whole period, whoever it belongs to: usage
-- of a customer the catalog does not know has no invoice of its own to hold. A held period's
-- invoices stay drafts, nothing of it is exported, and the check close_has_no_unpriced_usage
-- fails the monthly run naming the customers and models. One row per held period, customer,
-- model, meter and reason.

with

periods as (

    select distinct
        billing_period_start,
        billing_period_end
    from {{ ref('fct_subscription_fees') }}
    where
        {{ in_window('billing_period_start') }}
        and {{ invoice_finalized_at('billing_period_end') }} <= {{ as_of() }}

),

unpriced as (

    select * from {{ ref('fct_unpriced_usage') }}

)

select
    periods.billing_period_start,
    periods.billing_period_end,
    unpriced.customer_id,
    unpriced.model,
    unpriced.meter,
    unpriced.unpriced_reason,
    cast(sum(unpriced.quantity) as bigint) as quantity,
    min(unpriced.usage_hour) as first_usage_hour,
    max(unpriced.usage_hour) as last_usage_hour
from periods
inner join unpriced
    on
        unpriced.usage_hour >= periods.billing_period_start
        and unpriced.usage_hour < periods.billing_period_end
group by all
