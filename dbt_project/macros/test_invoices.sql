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

{#- Rounding never makes credits exceed the charges: where the exact total is >= 0, the
    rounded total is too, and the credits applied are between 0 and the rounded charges. -#}
{% test credits_never_exceed_charges(model) %}
select
    invoice_id,
    sum(amount_precise) as total_precise,
    sum(amount) as total,
    -sum(case when line_type = 'credits' then amount else 0 end) as credits_applied
from {{ model }}
where {{ in_window('billing_period_start') }}
group by invoice_id
having
    sum(amount_precise) >= 0
    and (
        sum(amount) < 0
        or sum(case when line_type = 'credits' then amount else 0 end) > 0
    )
{% endtest %}

{#- The rounding rule's promises per line: whole minor units, within one minor unit of the exact
    amount (strictly, but for the credits line), and the lines of an invoice add up to its exact
    total rounded once. -#}
{% test invoice_lines_add_up(model) %}
with lines as (
    select * from {{ model }}
    where {{ in_window('billing_period_start') }}
),
off_by_more as (
    select invoice_id, line_key, 'line more than one minor unit off' as problem
    from lines
    where
        abs(amount - amount_precise) > {{ minor_unit('minor_unit_exponent') }}
        or (line_type <> 'credits'
            and abs(amount - amount_precise) >= {{ minor_unit('minor_unit_exponent') }})
        or amount <> amount_minor_units * {{ minor_unit('minor_unit_exponent') }}
),
totals as (
    select invoice_id, 'lines do not add up to the exact total rounded once' as problem
    from lines
    group by invoice_id, minor_unit_exponent
    having
        sum(amount)
        <> {{ round_to_minor_unit('sum(amount_precise)', 'minor_unit_exponent') }}
)
select invoice_id, line_key, problem from off_by_more
union all
select invoice_id, null, problem from totals
{% endtest %}

{% test total_due_is_exact_total_rounded_once(model) %}
select invoices.*
from {{ model }} as invoices
inner join {{ source('catalog', 'currencies') }} as currencies
    on invoices.currency = currencies.currency
where
    invoices.total_due
    <> {{ round_to_minor_unit('invoices.total_precise', 'currencies.minor_unit_exponent') }}
{% endtest %}
