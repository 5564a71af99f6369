{{
    config(
        pre_hook="{{ delete_window('billing_period_start') }}",
    )
}}

-- Every line of the invoices of the billing periods starting in the window: the frozen lines
-- of finalized invoices, the computed lines of drafts, and the adjustments booked onto an
-- invoice (while it was a draft; they stay on it once it is finalized). idempotency_key is
-- stable per invoice and line: a payment provider that receives the same line twice charges
-- it once.
--
-- The rounding rule (the one place it is written; the export and the statement read it):
--   1. the invoice's total_due is its exact total (every line, credits included) rounded once
--      to the currency's minor unit, half away from zero; its subtotal likewise is the exact
--      sum of the lines other than credits, rounded once;
--   2. the credits line is what makes them meet: subtotal - total_due. Credits applied never
--      exceed the rounded charges (an exact total >= 0 rounds to >= 0) and stay within one
--      minor unit of the wallet deductions;
--   3. the subtotal is spread over the other lines by largest remainder: each line gets its
--      exact amount rounded down to the minor unit, and the units still missing go one each
--      to the lines with the largest remainders (ties: line_key order). Each line is within
--      one minor unit of its exact amount (below it by less than one, or above by less than
--      one), a line already exact in minor units stays exact, and the lines add up exactly.
-- A subscription under its minimum has exact charges fee + minimum (both rounded to the
-- minor unit when prorated, in fct_subscription_fees), so it pays exactly that.

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
        md5({{ string_agg_ordered('adjustment_id', "','", 'adjustment_id') }}) as adjustment_id,
        'Adjustment to ' || original_invoice_id || ' (' || {{ format_timestamp('original_period_start', '%Y-%m') }}
        || '): ' || {{ string_agg_ordered("replace(line_key, 'usage:', '')", "', '", 'line_key') }}
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
        unit_description, quantity, unit_price, unit, amount_precise,
        'finalized' as status,
        cast(null as {{ string_type() }}) as original_invoice_id,
        cast(null as timestamp) as original_period_start
    from frozen

    union all

    select
        invoice_id, subscription_id, customer_id, currency, minor_unit_exponent,
        billing_period_start, billing_period_end, line_key, line_type, description,
        unit_description, quantity, unit_price, unit, amount_precise,
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
        null,
        null,
        adjustments.amount_precise,
        case when adjustments.target_invoice_id in (select invoice_id from frozen)
            then 'finalized' else 'draft' end,
        adjustments.original_invoice_id,
        adjustments.original_period_start
    from adjustments
    inner join currencies on adjustments.currency = currencies.currency
    inner join periods on adjustments.target_invoice_id = periods.invoice_id

),

scaled as (

    select
        *,
        case when line_type = 'credits' then 'credits' else 'charges' end as pool,
        {{ to_minor_units('amount_precise', 'minor_unit_exponent') }} as units_precise
    from lines

),

floored as (

    select
        *,
        floor(units_precise) as units_floor,
        units_precise - floor(units_precise) as units_remainder
    from scaled

),

invoice_totals as (

    select
        invoice_id,
        round(sum(units_precise), 0) as total_units,
        round(sum(case when pool = 'charges' then units_precise else 0 end), 0)
            as subtotal_units
    from scaled
    group by invoice_id

),

ranked as (

    select
        *,
        row_number() over (
            partition by invoice_id, pool order by units_remainder desc, line_key
        ) as remainder_rank,
        sum(units_floor) over (partition by invoice_id, pool) as pool_floor_units
    from floored

),

allocated as (

    select
        ranked.*,
        case
            when ranked.pool = 'credits'
                then invoice_totals.total_units - invoice_totals.subtotal_units
            else
                ranked.units_floor
                + case
                    when ranked.remainder_rank <= invoice_totals.subtotal_units - ranked.pool_floor_units
                        then 1
                    else 0
                end
        end as units
    from ranked
    inner join invoice_totals on ranked.invoice_id = invoice_totals.invoice_id

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
    cast(unit_price as decimal(38, 18)) as unit_price,
    unit,
    cast(amount_precise as decimal(38, 18)) as amount_precise,
    cast(cast(units as decimal(38, 0)) * {{ minor_unit('minor_unit_exponent') }} as decimal(38, 18))
        as amount,
    cast(units as bigint) as amount_minor_units,
    status,
    original_invoice_id,
    original_period_start,
    md5(invoice_id || ':' || line_key) as idempotency_key
from allocated
