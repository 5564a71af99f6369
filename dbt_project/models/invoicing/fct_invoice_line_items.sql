{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_window('billing_period_start') }}",
    )
}}

-- Every line of the invoices of the billing periods starting in the window: the frozen lines
-- of finalized invoices, the computed lines of drafts, and the adjustments booked onto drafts.
-- Each line is rounded to the currency's minor unit, half away from zero; the exact amount
-- stays beside it. idempotency_key is stable per invoice and line: a payment provider that
-- receives the same line twice charges it once.

with

computed as (

    select * from {{ ref('int_invoicing__computed_lines') }}

),

frozen as (

    select * from {{ ref('fct_finalized_invoice_lines') }}
    where {{ in_window('billing_period_start') }}

),

-- One line per corrected invoice and booking, summing its per-line differences.
adjustments as (

    select
        target_invoice_id,
        subscription_id,
        customer_id,
        currency,
        original_invoice_id,
        original_period_start,
        booked_at,
        md5(string_agg(adjustment_id, ',' order by adjustment_id)) as adjustment_id,
        'Adjustment to ' || original_invoice_id || ' (' || strftime(original_period_start, '%Y-%m')
        || '): ' || string_agg(replace(line_key, 'usage:', ''), ', ' order by line_key)
            as description,
        cast(count(*) as bigint) as corrected_lines,
        sum(amount_precise) as amount_precise
    from {{ ref('fct_invoice_adjustments') }}
    where {{ in_window('target_period_start') }}
    group by
        target_invoice_id, subscription_id, customer_id, currency, original_invoice_id,
        original_period_start, booked_at

),

currencies as (

    select * from {{ source('catalog', 'currencies') }}

),

drafts as (

    select * from computed
    where invoice_id not in (select invoice_id from frozen)

),

periods as (

    select distinct
        invoice_id,
        billing_period_start,
        billing_period_end
    from computed

),

lines as (

    select
        invoice_id, subscription_id, customer_id, currency, minor_unit_exponent,
        billing_period_start, billing_period_end, line_key, line_type, description,
        unit_description, quantity, amount_precise, amount,
        'finalized' as status,
        cast(null as varchar) as original_invoice_id,
        cast(null as timestamp) as original_period_start
    from frozen

    union all

    select
        invoice_id, subscription_id, customer_id, currency, minor_unit_exponent,
        billing_period_start, billing_period_end, line_key, line_type, description,
        unit_description, quantity, amount_precise, amount,
        'draft',
        null,
        null
    from drafts

    union all

    select
        adjustments.target_invoice_id,
        adjustments.subscription_id,
        adjustments.customer_id,
        adjustments.currency,
        currencies.minor_unit_exponent,
        periods.billing_period_start,
        periods.billing_period_end,
        'adjustment:' || adjustments.adjustment_id,
        'adjustment',
        adjustments.description,
        'correction of a finalized invoice',
        adjustments.corrected_lines,
        adjustments.amount_precise,
        {{ round_to_minor_unit('adjustments.amount_precise', 'currencies.minor_unit_exponent') }},
        'draft',
        adjustments.original_invoice_id,
        adjustments.original_period_start
    from adjustments
    inner join currencies on adjustments.currency = currencies.currency
    inner join periods on adjustments.target_invoice_id = periods.invoice_id
    where adjustments.target_invoice_id not in (select invoice_id from frozen)

)

select
    invoice_id,
    subscription_id,
    customer_id,
    currency,
    cast(minor_unit_exponent as integer) as minor_unit_exponent,
    cast(billing_period_start as timestamp) as billing_period_start,
    cast(billing_period_end as timestamp) as billing_period_end,
    line_key,
    line_type,
    description,
    unit_description,
    cast(quantity as bigint) as quantity,
    cast(amount_precise as decimal(38, 18)) as amount_precise,
    cast(amount as decimal(38, 18)) as amount,
    cast(amount * power(10, minor_unit_exponent) as bigint) as amount_minor_units,
    status,
    original_invoice_id,
    original_period_start,
    md5(invoice_id || ':' || line_key) as idempotency_key
from lines
