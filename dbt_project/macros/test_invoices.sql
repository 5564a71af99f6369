{#- Invoice invariants (generic tests on fct_invoice_line_items / fct_invoices). A finalized
    invoice plus the adjustments booked against it must still equal its sources. -#}

{% test invoice_lines_match_source(model, line_type, source_sql) %}
with invoiced as (
    select invoice_id, subscription_id, billing_period_start, sum(amount_precise) as amount
    from {{ model }}
    where line_type = '{{ line_type }}' and {{ in_window('billing_period_start') }}
    group by all
),
adjusted as (
    select original_invoice_id as invoice_id, sum(amount_precise) as amount
    from {{ ref('fct_invoice_adjustments') }}
    where line_type = '{{ line_type }}'
    group by all
),
invoices as (
    select distinct invoice_id, subscription_id, billing_period_start
    from {{ model }}
    where {{ in_window('billing_period_start') }}
),
expected as (
    {{ source_sql }}
)
select invoices.invoice_id,
    coalesce(invoiced.amount, 0) + coalesce(adjusted.amount, 0) as invoiced_amount,
    coalesce(expected.amount, 0) as source_amount
from invoices
left join invoiced on invoices.invoice_id = invoiced.invoice_id
left join adjusted on invoices.invoice_id = adjusted.invoice_id
left join expected
    on invoices.subscription_id = expected.subscription_id
    and invoices.billing_period_start = expected.billing_period_start
where coalesce(invoiced.amount, 0) + coalesce(adjusted.amount, 0) <> coalesce(expected.amount, 0)
{% endtest %}

{% test total_due_is_subtotal_minus_credits(model) %}
select * from {{ model }}
where total_due <> subtotal - credits_applied
{% endtest %}

{#- Credits never take an invoice below zero (only a negative adjustment can). -#}
{% test credits_never_exceed_charges(model) %}
select invoice_id, sum(amount) as total
from {{ model }}
where line_type <> 'adjustment' and {{ in_window('billing_period_start') }}
group by invoice_id
having sum(amount) < 0
{% endtest %}
