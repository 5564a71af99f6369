{{
    config(
        pre_hook="{{ delete_window('billing_period_start') }}",
    )
}}

-- One invoice per subscription and billing period, totalling its rounded lines: subtotal (every
-- line but credits) less the credits applied. By the rounding rule of fct_invoice_line_items,
-- total_due is total_precise rounded once and subtotal the exact charges rounded once.

with

lines as (

    select * from {{ ref('fct_invoice_line_items') }}
    where {{ in_window('billing_period_start') }}

),

finalized as (

    select
        invoice_id,
        max(finalized_at) as finalized_at
    from {{ ref('fct_finalized_invoice_lines') }}
    where {{ in_window('billing_period_start') }}
    group by invoice_id

)

select
    lines.invoice_id,
    lines.customer_id,
    lines.subscription_id,
    lines.billing_period_start,
    lines.billing_period_end,
    lines.currency,
    cast(sum(case when lines.line_type <> 'credits' then lines.amount else 0 end)
        as decimal(38, 18)) as subtotal,
    cast(-sum(case when lines.line_type = 'credits' then lines.amount else 0 end)
        as decimal(38, 18)) as credits_applied,
    cast(sum(lines.amount) as decimal(38, 18)) as total_due,
    cast(sum(lines.amount_precise) as decimal(38, 18)) as total_precise,
    cast(count(*) as bigint) as line_count,
    case when finalized.invoice_id is null then 'draft' else 'finalized' end as status,
    finalized.finalized_at
from lines
left join finalized on lines.invoice_id = finalized.invoice_id
group by
    lines.invoice_id, lines.customer_id, lines.subscription_id, lines.billing_period_start,
    lines.billing_period_end, lines.currency, finalized.invoice_id, finalized.finalized_at
