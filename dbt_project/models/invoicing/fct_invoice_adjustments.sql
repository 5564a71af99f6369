{{
    config(
        full_refresh=false,
    )
}}

-- full_refresh=false: booked adjustments are history (they were billed on later invoices);
-- `dbt build --full-refresh` leaves the table as it is instead of re-booking from scratch.

-- What changed in a finalized invoice since it was finalized (late events, a corrected price,
-- a backfill): per line, the recomputed amount less the frozen amount less the adjustments
-- already booked. Append-only and self-correcting: once booked, the difference is zero, so a
-- re-run books nothing twice. Each adjustment goes to the subscription's next draft invoice:
-- the billing period containing as_of minus the grace period.

with

computed as (

    select * from {{ ref('int_invoicing__computed_lines') }}

),

frozen as (

    select * from {{ ref('fct_finalized_invoice_lines') }}
    where
        {{ in_window('billing_period_start') }}
        and finalized_at < {{ as_of() }}

),

booked as (

    {% if is_incremental() %}
        select
            original_invoice_id,
            line_key,
            sum(amount_precise) as amount_precise
        from {{ this }}
        group by all
    {% else %}
        select
            cast(null as {{ string_type() }}) as original_invoice_id,
            cast(null as {{ string_type() }}) as line_key,
            cast(null as decimal(38, 18)) as amount_precise
        where false
    {% endif %}

),

subscriptions as (

    select * from {{ ref('dim_subscriptions') }}

),

invoices as (

    select distinct
        invoice_id,
        subscription_id,
        customer_id,
        currency,
        billing_period_start
    from frozen

),

line_keys as (

    select invoice_id, line_key from computed
    where invoice_id in (select invoice_id from invoices)
    union
    select invoice_id, line_key from frozen

),

compared as (

    select
        invoices.invoice_id as original_invoice_id,
        invoices.subscription_id,
        invoices.customer_id,
        invoices.currency,
        invoices.billing_period_start as original_period_start,
        line_keys.line_key,
        coalesce(computed.line_type, frozen.line_type) as line_type,
        coalesce(computed.description, frozen.description) as description,
        coalesce(computed.amount_precise, 0)
        - coalesce(frozen.amount_precise, 0)
        - coalesce(booked.amount_precise, 0) as delta
    from line_keys
    inner join invoices on line_keys.invoice_id = invoices.invoice_id
    left join computed
        on line_keys.invoice_id = computed.invoice_id and line_keys.line_key = computed.line_key
    left join frozen
        on line_keys.invoice_id = frozen.invoice_id and line_keys.line_key = frozen.line_key
    left join booked
        on
            line_keys.invoice_id = booked.original_invoice_id
            and line_keys.line_key = booked.line_key

),

targets as (

    select
        compared.*,
        {{ billing_period_start(dbt.dateadd('day', -(invoice_grace_days() | int), as_of()), 'subscriptions.billing_anchor_day') }}
            as target_period_start
    from compared
    inner join subscriptions on compared.subscription_id = subscriptions.subscription_id
    where compared.delta <> 0

)

select
    md5(original_invoice_id || '|' || line_key || '|' || cast(delta as {{ string_type() }}) || '|'
        || cast({{ as_of() }} as {{ string_type() }})) as adjustment_id,
    original_invoice_id,
    original_period_start,
    subscription_id,
    customer_id,
    currency,
    {{ invoice_id('subscription_id', 'target_period_start') }} as target_invoice_id,
    cast(target_period_start as timestamp) as target_period_start,
    line_key,
    line_type,
    'Adjustment to ' || original_invoice_id || ' (' || {{ format_timestamp('original_period_start', '%Y-%m') }}
    || '): ' || description as description,
    cast(delta as decimal(38, 18)) as amount_precise,
    {{ as_of() }} as booked_at
from targets
