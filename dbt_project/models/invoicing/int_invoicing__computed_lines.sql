{{ config(materialized='ephemeral') }}

-- Every invoice line of the billing periods starting in the window, computed afresh from the
-- rated charges, the subscription fees and the wallet ledger. One invoice per subscription and
-- billing period. Amounts are exact here; fct_invoice_line_items rounds each line.

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
        'inv_' || fees.subscription_id || '_' || strftime(fees.billing_period_start, '%Y%m%d')
            as invoice_id
    from fees

),

subscriptions as (

    select * from {{ ref('dim_subscriptions') }}

),

rated as (

    select
        rated.subscription_id,
        rated.billing_period_start,
        rated.price_id,
        rated.meter,
        max(rated.price_version) as price_version,
        sum(rated.billable_quantity) as quantity,
        sum(rated.amount) as amount
    from {{ ref('fct_rated_charges_hourly') }} as rated
    inner join periods
        on
            rated.subscription_id = periods.subscription_id
            and rated.billing_period_start = periods.billing_period_start
    group by all

),

prices as (

    select * from {{ ref('dim_prices') }}

),

-- Where tiers apply, how the period's quantity (after the allowance) spreads over them, at
-- the price version in force at the end of the period: "10000000 @ 19.5 + 2000000 @ 17.55".
tier_breakdown as (

    select
        rated.subscription_id,
        rated.billing_period_start,
        rated.price_id,
        rated.meter,
        string_agg(
            cast(
                case prices.pricing_model
                    when 'volume' then greatest(rated.quantity - prices.included_tokens, 0)
                    else
                        least(greatest(rated.quantity - prices.included_tokens, 0), coalesce(tiers.upper_tokens, rated.quantity))
                        - tiers.lower_tokens
                end as varchar
            )
            || ' @ ' || cast(cast(tiers.unit_price_per_token * prices.unit_size as decimal(38, 9)) as varchar),
            ' + ' order by tiers.tier
        ) as breakdown
    from rated
    inner join prices
        on rated.price_id = prices.price_id and rated.price_version = prices.price_version
    inner join {{ ref('dim_price_tiers') }} as tiers
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

-- Wallet entries belong to the subscription active at their time.
ledger as (

    select
        ledger.*,
        subscriptions.subscription_id
    from {{ ref('fct_wallet_ledger') }} as ledger
    inner join subscriptions
        on
            ledger.customer_id = subscriptions.customer_id
            and ledger.entry_ts >= subscriptions.starts_at
            and (subscriptions.ends_at is null or ledger.entry_ts < subscriptions.ends_at)
    where ledger.entry_type = 'top_up'

),

lines as (

    select
        periods.invoice_id,
        'platform_fee' as line_key,
        'platform_fee' as line_type,
        'Platform fee (' || fees.plan_id || '), '
        || cast(fees.active_seconds // 86400 as varchar) || ' of '
        || cast(fees.period_seconds // 86400 as varchar) || ' days' as description,
        'per billing period, prorated by time' as unit_description,
        cast(fees.active_seconds as bigint) as quantity,
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
        prices.selector_model || ' ' || replace(rated.meter, '_', ' ')
        || ' (' || cast(rated.quantity as varchar) || ')',
        prices.pricing_model || ' per ' || prices.unit
        || case when rated.meter = 'requests' then ' requests' else ' tokens' end
        || case
            when prices.included_tokens > 0
                then ', first ' || cast(prices.included_tokens as varchar) || ' free'
            else ''
        end
        || coalesce(': ' || tier_breakdown.breakdown, ''),
        cast(rated.quantity as bigint),
        rated.amount
    from rated
    inner join periods
        on
            rated.subscription_id = periods.subscription_id
            and rated.billing_period_start = periods.billing_period_start
    left join prices
        on rated.price_id = prices.price_id and rated.price_version = prices.price_version
    left join tier_breakdown
        on
            rated.subscription_id = tier_breakdown.subscription_id
            and rated.billing_period_start = tier_breakdown.billing_period_start
            and rated.price_id = tier_breakdown.price_id
            and rated.meter = tier_breakdown.meter

    union all

    select
        periods.invoice_id,
        'minimum_true_up',
        'minimum_true_up',
        'Minimum spend true-up (minimum ' || cast(fees.minimum_spend_amount as decimal(38, 2))
        || ', usage ' || cast(fees.usage_amount as decimal(38, 2)) || ')',
        'per billing period',
        1,
        fees.minimum_spend_true_up
    from fees
    inner join periods
        on
            fees.subscription_id = periods.subscription_id
            and fees.billing_period_start = periods.billing_period_start
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
        'Credit top-up ' || ledger.grant_id || ' (' || strftime(ledger.entry_ts, '%Y-%m-%d %H:%M')
        || ' UTC)',
        'automatic top-up purchase',
        1,
        ledger.amount
    from ledger
    inner join periods
        on
            ledger.subscription_id = periods.subscription_id
            and ledger.billing_period_start = periods.billing_period_start
    where ledger.entry_type = 'top_up'

),

currencies as (

    select * from {{ source('catalog', 'currencies') }}

),

rounded as (

    select
        lines.*,
        currencies.minor_unit_exponent,
        {{ round_to_minor_unit('lines.amount_precise', 'currencies.minor_unit_exponent') }}
            as amount_rounded
    from lines
    inner join periods on lines.invoice_id = periods.invoice_id
    inner join currencies on periods.currency = currencies.currency

),

capped as (

    -- Credits applied never exceed what the other (rounded) lines add up to: rounding each
    -- usage line separately can leave them a cent under the exact credits drawn, and an
    -- invoice must not come out at -0.01. The exact amount stays in amount_precise.
    select
        *,
        case
            when line_type = 'credits'
                then greatest(
                    amount_rounded,
                    -greatest(
                        sum(case when line_type <> 'credits' then amount_rounded else 0 end)
                            over (partition by invoice_id),
                        0
                    )
                )
            else amount_rounded
        end as amount
    from rounded

)

select
    periods.invoice_id,
    periods.subscription_id,
    periods.customer_id,
    periods.currency,
    cast(capped.minor_unit_exponent as integer) as minor_unit_exponent,
    periods.billing_period_start,
    periods.billing_period_end,
    capped.line_key,
    capped.line_type,
    capped.description,
    capped.unit_description,
    capped.quantity,
    cast(capped.amount_precise as decimal(38, 18)) as amount_precise,
    cast(capped.amount as decimal(38, 18)) as amount
from capped
inner join periods on capped.invoice_id = periods.invoice_id
