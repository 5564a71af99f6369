{{ config(materialized='table') }}

-- Every invoice line of the billing periods starting in the window, computed afresh from the
-- rated charges, the subscription fees and the wallet ledger. One invoice per subscription and
-- billing period. Amounts are exact here; fct_invoice_line_items rounds the invoice (see there).
-- A table rebuilt by every monthly run, holding that run's window only: computed once, read by
-- fct_finalized_invoice_lines, fct_invoice_adjustments and fct_invoice_line_items (issue #13); it
-- reads the period usage (int_invoicing__period_usage) instead of every hourly charge.

with

fees as (

    select * from {{ ref('fct_subscription_fees') }}
    where {{ in_window('billing_period_start') }}

),

periods as (

    select
        fees.subscription_id,
        fees.customer_id,
        fees.plan_id,
        fees.currency,
        fees.billing_period_start,
        fees.billing_period_end,
        {{ invoice_id('fees.subscription_id', 'fees.billing_period_start') }} as invoice_id
    from fees

),

subscriptions as (

    select * from {{ ref('dim_subscriptions') }}

),

currencies as (

    select * from {{ source('catalog', 'currencies') }}

),

rated as (

    select
        usage.subscription_id,
        usage.billing_period_start,
        usage.price_id,
        usage.meter,
        periods.currency,
        currencies.minor_unit_exponent,
        usage.price_version,
        usage.price_versions,
        usage.quantity,
        usage.amount,
        usage.forgiven_amount
    from {{ ref('int_invoicing__period_usage') }} as usage
    inner join periods
        on
            usage.subscription_id = periods.subscription_id
            and usage.billing_period_start = periods.billing_period_start
    inner join currencies on periods.currency = currencies.currency

),

prices as (

    select * from {{ ref('dim_prices') }}

),

tiers as (

    select * from {{ ref('dim_price_tiers') }}

),

{% set tier_text -%}
            {{ format_quantity(
                "case prices.pricing_model
                    when 'volume' then greatest(rated.quantity - prices.included_tokens, 0)
                    else
                        least(greatest(rated.quantity - prices.included_tokens, 0), coalesce(tiers.upper_tokens, rated.quantity))
                        - tiers.lower_tokens
                end",
                'prices.unit_size', 'prices.unit') }}
            || ' at '
            || {{ format_price('tiers.unit_price_per_token * prices.unit_size', 'rated.minor_unit_exponent', 'rated.currency') }}
            || case when tiers.flat_fee > 0
                then ' + ' || {{ format_price('tiers.flat_fee', 'rated.minor_unit_exponent', 'rated.currency') }} || ' flat'
                else '' end
{%- endset %}

-- Where tiers apply, how the period's quantity (after the allowance) spreads over them, at
-- the price version in force at the end of the period: "10.0M at $19.50 + 2.0M at $17.55".
tier_breakdown as (

    select
        rated.subscription_id,
        rated.billing_period_start,
        rated.price_id,
        rated.meter,
        {{ string_agg_ordered(tier_text, "' + '", 'tiers.tier') }} as breakdown
    from rated
    inner join prices
        on rated.price_id = prices.price_id and rated.price_version = prices.price_version
    inner join tiers
        on rated.price_id = tiers.price_id and rated.price_version = tiers.price_version
    where
        prices.pricing_model in ('graduated', 'volume')
        and (
            (prices.pricing_model = 'graduated'
                and greatest(rated.quantity - prices.included_tokens, 0) > tiers.lower_tokens)
            or (prices.pricing_model = 'volume'
                and greatest(rated.quantity - prices.included_tokens, 0) > tiers.lower_tokens
                and (tiers.upper_tokens is null
                    or greatest(rated.quantity - prices.included_tokens, 0) <= tiers.upper_tokens))
        )
    group by all

),

-- The one price per unit of a line, where one exists: a per-unit price without allowance, in
-- one version over the whole period (quantity x unit price = the exact amount).
unit_prices as (

    select
        rated.subscription_id,
        rated.billing_period_start,
        rated.price_id,
        rated.meter,
        tiers.unit_price_per_token * prices.unit_size as unit_price
    from rated
    inner join prices
        on rated.price_id = prices.price_id and rated.price_version = prices.price_version
    inner join tiers
        on rated.price_id = tiers.price_id and rated.price_version = tiers.price_version
    where
        prices.pricing_model = 'per_unit'
        and prices.included_tokens = 0
        and rated.price_versions = 1

),

-- Wallet entries belong to the subscription active at their time.
ledger as (

    select
        ledger.*,
        subscriptions.subscription_id
    from {{ ref('fct_wallet_ledger') }} as ledger
    inner join subscriptions
        on
            ledger.customer_id = subscriptions.customer_id
            and {{ subscription_active_at('ledger.entry_ts', 'subscriptions') }}
    where ledger.entry_type = 'top_up'

),

lines as (

    select
        periods.invoice_id,
        'platform_fee' as line_key,
        'platform_fee' as line_type,
        'Platform fee (' || fees.plan_id || ')'
        || case
            when fees.active_seconds < fees.period_seconds
                then ', ' || cast({{ integer_divide('fees.active_seconds', 86400) }} as {{ string_type() }}) || ' of '
                || cast({{ integer_divide('fees.period_seconds', 86400) }} as {{ string_type() }}) || ' days'
            else ''
        end as description,
        'per billing period, prorated by time' as unit_description,
        cast(fees.active_seconds as bigint) as quantity,
        cast(null as decimal(38, 18)) as unit_price,
        cast(null as {{ string_type() }}) as unit,
        fees.platform_fee_amount as amount_precise
    from fees
    inner join periods
        on
            fees.subscription_id = periods.subscription_id
            and fees.billing_period_start = periods.billing_period_start
    where fees.platform_fee_amount <> 0

    union all

    select
        periods.invoice_id,
        'usage:' || rated.price_id || ':' || rated.meter,
        'usage',
        coalesce({{ model_display_name('prices.selector_model') }}, rated.price_id) || ' '
        || {{ meter_words('rated.meter') }} || ', '
        || {{ format_quantity('rated.quantity', 'prices.unit_size', 'prices.unit') }}
        || case when rated.meter = 'requests' then ' requests' else ' tokens' end
        || case
            when rated.price_versions > 1 then ' at the prices in force at each hour'
            when prices.pricing_model = 'per_unit'
                then ' at '
                || {{ format_price('tiers.unit_price_per_token * prices.unit_size', 'rated.minor_unit_exponent', 'rated.currency') }}
                || ' per ' || case when prices.unit = '1' then 'token' else prices.unit end
            when prices.pricing_model = 'package'
                then ' at '
                || {{ format_price('prices.package_price', 'rated.minor_unit_exponent', 'rated.currency') }}
                || ' per started package of '
                || {{ format_quantity('prices.package_size_tokens', 1, "''") }}
            else coalesce(', ' || prices.pricing_model || ' tiers: ' || tier_breakdown.breakdown, '')
                || case when prices.unit = '1' then '' else ' per ' || prices.unit end
        end
        || case
            when prices.included_tokens > 0
                then ' (first '
                || {{ format_quantity('prices.included_tokens', 'prices.unit_size', 'prices.unit') }}
                || ' free)'
            else ''
        end,
        prices.pricing_model || ' per ' || prices.unit
        || case when rated.meter = 'requests' then ' requests' else ' tokens' end
        || case
            when prices.included_tokens > 0
                then ', first ' || cast(prices.included_tokens as {{ string_type() }}) || ' free'
            else ''
        end,
        cast(rated.quantity as bigint),
        unit_prices.unit_price,
        prices.unit,
        rated.amount
    from rated
    inner join periods
        on
            rated.subscription_id = periods.subscription_id
            and rated.billing_period_start = periods.billing_period_start
    left join prices
        on rated.price_id = prices.price_id and rated.price_version = prices.price_version
    left join tiers
        on
            rated.price_id = tiers.price_id
            and rated.price_version = tiers.price_version
            and tiers.tier = 1
    left join tier_breakdown
        on
            rated.subscription_id = tier_breakdown.subscription_id
            and rated.billing_period_start = tier_breakdown.billing_period_start
            and rated.price_id = tier_breakdown.price_id
            and rated.meter = tier_breakdown.meter
    left join unit_prices
        on
            rated.subscription_id = unit_prices.subscription_id
            and rated.billing_period_start = unit_prices.billing_period_start
            and rated.price_id = unit_prices.price_id
            and rated.meter = unit_prices.meter

    union all

    -- Usage lines show the charges before spend caps; this line takes off what the caps
    -- forgave (fct_rated_charges_hourly.forgiven_amount), so the invoice charges the capped
    -- amount and shows what was forgiven.
    select
        periods.invoice_id,
        'spend_cap',
        'spend_cap',
        'Spend cap reached: '
        || {{ format_price(round_to_minor_unit('sum(rated.forgiven_amount)', 'rated.minor_unit_exponent'), 'rated.minor_unit_exponent', 'rated.currency') }}
        || ' of usage above max_spend forgiven',
        'usage charges above the spend caps of the billing period',
        1,
        null,
        null,
        -sum(rated.forgiven_amount)
    from rated
    inner join periods
        on
            rated.subscription_id = periods.subscription_id
            and rated.billing_period_start = periods.billing_period_start
    group by periods.invoice_id, rated.currency, rated.minor_unit_exponent
    having sum(rated.forgiven_amount) <> 0

    union all

    select
        periods.invoice_id,
        'minimum_true_up',
        'minimum_true_up',
        'Minimum spend true-up (minimum '
        || {{ format_price('fees.minimum_spend_amount', 'currencies.minor_unit_exponent', 'fees.currency') }}
        || ', usage '
        || {{ format_price(round_to_minor_unit('fees.usage_amount', 'currencies.minor_unit_exponent'), 'currencies.minor_unit_exponent', 'fees.currency') }}
        || ')',
        'per billing period',
        1,
        null,
        null,
        fees.minimum_spend_true_up
    from fees
    inner join periods
        on
            fees.subscription_id = periods.subscription_id
            and fees.billing_period_start = periods.billing_period_start
    inner join currencies on fees.currency = currencies.currency
    where fees.minimum_spend_true_up > 0

    union all

    -- The net credit used (deductions less reversals), owned by fct_wallet_credits.
    select
        periods.invoice_id,
        'credits',
        'credits',
        'Prepaid credits applied',
        'wallet credit used in the period (deductions less reversals)',
        cast(sum(wallet_credits.deductions + wallet_credits.reversals) as bigint),
        null,
        null,
        -sum(wallet_credits.credits_used)
    from {{ ref('fct_wallet_credits') }} as wallet_credits
    inner join periods
        on
            wallet_credits.subscription_id = periods.subscription_id
            and wallet_credits.billing_period_start = periods.billing_period_start
    where wallet_credits.deductions + wallet_credits.reversals > 0
    group by periods.invoice_id

    union all

    select
        periods.invoice_id,
        'top_up:' || ledger.grant_id,
        'top_up',
        'Credit top-up ' || ledger.grant_id || ' (' || {{ format_timestamp('ledger.entry_ts', '%Y-%m-%d %H:%M') }}
        || ' UTC)',
        'automatic top-up purchase',
        1,
        null,
        null,
        ledger.amount
    from ledger
    inner join periods
        on
            ledger.subscription_id = periods.subscription_id
            and ledger.billing_period_start = periods.billing_period_start
    where ledger.entry_type = 'top_up'

)

select
    periods.invoice_id,
    periods.subscription_id,
    periods.customer_id,
    periods.currency,
    cast(currencies.minor_unit_exponent as integer) as minor_unit_exponent,
    periods.billing_period_start,
    periods.billing_period_end,
    lines.line_key,
    lines.line_type,
    lines.description,
    lines.unit_description,
    lines.quantity,
    cast(lines.unit_price as decimal(38, 18)) as unit_price,
    lines.unit,
    cast(lines.amount_precise as decimal(38, 18)) as amount_precise
from lines
inner join periods on lines.invoice_id = periods.invoice_id
inner join currencies on periods.currency = currencies.currency
