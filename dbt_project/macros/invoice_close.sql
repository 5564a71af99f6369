{#- The monthly close: when an invoice becomes final, and what may stop it.

    An invoice is finalized at the end of its billing period plus the grace period
    (invoice_grace_days), the moment the monthly close runs, so that late events still land
    on the draft. fct_finalized_invoice_lines freezes the invoices due by as_of, except those
    of a billing period held by unpriced usage (fct_invoice_holds). -#}
{% macro invoice_finalized_at(billing_period_end) -%}
    {{ dbt.dateadd('day', invoice_grace_days() | int, billing_period_end) }}
{%- endmacro %}

{#- The id of a subscription's invoice for the billing period starting at period_start:
    inv_<subscription>_<period start YYYYMMDD>. -#}
{% macro invoice_id(subscription_id, period_start) -%}
    'inv_' || {{ subscription_id }} || '_' || {{ format_timestamp(period_start, '%Y%m%d') }}
{%- endmacro %}
