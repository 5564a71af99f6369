{{
    config(
        meta={
            'dagster': {'ref': {'name': 'fct_invoices'}},
            'remedy': 'the held periods were not finalized (their invoices stay drafts) and nothing was exported: add the customers, subscriptions or prices to the catalog, run catalog_job, backfill the hours from first_usage_hour to last_usage_hour and their days, then re-run the month',
        },
    )
}}

-- The monthly close finalizes nothing of a billing period with unpriced usage (see
-- fct_invoice_holds): one row per customer holding a period of this run, naming its models.
-- A check on fct_invoices, so that the drafts are still built before it fails the run.
-- depends_on: {{ ref('fct_invoices') }}

select
    customer_id,
    {{ string_agg_ordered('model', "', '", 'model', distinct=true) }} as models,
    {{ string_agg_ordered('unpriced_reason', "', '", 'unpriced_reason', distinct=true) }} as reasons,
    {{ string_agg_ordered(
        format_timestamp('billing_period_start', '%Y-%m-%d'), "', '",
        format_timestamp('billing_period_start', '%Y-%m-%d'), distinct=true
    ) }} as held_periods,
    min(first_usage_hour) as first_usage_hour,
    max(last_usage_hour) as last_usage_hour
from {{ ref('fct_invoice_holds') }}
where {{ in_window('billing_period_start') }}
group by customer_id
