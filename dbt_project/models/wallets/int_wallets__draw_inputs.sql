{{ config(schema='marts', materialized=view_materialization(), tags=['hourly']) }}

-- Everything the Python draw-down (billing/wallet_ledger) reads, and the only thing it reads:
-- one owner per billing rule. Four kinds of rows per wallet (input_type):
-- - wallet: the wallet and its auto top-up rule; draw_rank is where top-ups draw.
-- - grant: a grant of wallets.yml with its place in the draw order (draw_rank).
-- - charge: the wallet's net rated amount of an hour, with its billing period.
-- - period: an interval [valid_from, valid_to) of one billing period (billing_period_start),
--   so that any instant (a grant, an expiry, a top-up) is labelled with the same rule the
--   rating uses (macro billing_period_start on the subscription active at that instant, the
--   calendar month when none is).
-- A view, recreated by every hourly run (cheap); readers filter it by time.

with

wallets as (

    select * from {{ source('wallet_catalog', 'wallets') }}

),

grants as (

    select * from {{ source('wallet_catalog', 'wallet_grants') }}

),

subscriptions as (

    select * from {{ ref('dim_subscriptions') }}

),

rated as (

    select * from {{ ref('fct_rated_charges_hourly') }}

),

-- The draw order: lower priority first, then earliest expiry (no expiry last), then
-- promotional before purchased, then oldest, then grant id. Ranks are even; a wallet's
-- top-ups draw at the odd rank after every grant of their priority or lower (they are the
-- fallback credit), the oldest top-up first.
ranked_grants as (

    select
        grants.*,
        2 * row_number() over (
            partition by grants.wallet_id
            order by
                grants.priority,
                grants.expires_at is null,
                grants.expires_at,
                grants.kind <> 'promotional',
                grants.granted_at,
                grants.grant_id
        ) as draw_rank
    from grants

),

top_up_ranks as (

    select
        wallets.wallet_id,
        2 * count(ranked_grants.grant_id) + 1 as draw_rank
    from wallets
    left join ranked_grants
        on
            wallets.wallet_id = ranked_grants.wallet_id
            and ranked_grants.priority <= coalesce(wallets.auto_top_up_priority, 0)
    group by wallets.wallet_id

),

charges as (

    select
        wallets.wallet_id,
        rated.usage_hour,
        rated.billing_period_start,
        sum(rated.amount) as amount
    from rated
    inner join wallets
        on rated.customer_id = wallets.customer_id and rated.currency = wallets.currency
    group by all

),

wallet_subscriptions as (

    select
        wallets.wallet_id,
        subscriptions.starts_at,
        subscriptions.ends_at,
        subscriptions.billing_anchor_day
    from wallets
    inner join subscriptions on wallets.customer_id = subscriptions.customer_id

),

-- The months the calendar covers: from a month before the wallet's first grant or
-- subscription to 13 months after the latest of them and today.
bounds as (

    select
        wallets.wallet_id,
        {{ dbt.dateadd('month', -1, dbt.date_trunc('month', 'min(moments.moment)')) }} as first_month,
        {{ dbt.dateadd('month', 13, dbt.date_trunc('month', 'max(moments.moment)')) }} as last_month
    from wallets
    inner join (
        select wallet_id, granted_at as moment from grants
        union all
        select wallet_id, expires_at from grants where expires_at is not null
        union all
        select wallet_id, starts_at from wallet_subscriptions
        union all
        select wallet_id, ends_at from wallet_subscriptions where ends_at is not null
        union all
        select wallet_id, cast(current_date as timestamp) from wallets
    ) as moments on wallets.wallet_id = moments.wallet_id
    group by wallets.wallet_id

),

months as (

    select
        wallet_id,
        {{ unnest_series('first_month', 'last_month', 'interval 1 month') }} as month_start
    from bounds

),

-- Every instant where the label can change: month starts (calendar periods), each
-- subscription's anchor day in every month, subscription starts and ends.
boundaries as (

    select wallet_id, month_start as moment from months
    union
    select
        months.wallet_id,
        {{ dbt.dateadd('day', 'wallet_subscriptions.billing_anchor_day - 1', 'months.month_start') }}
    from months
    inner join wallet_subscriptions on months.wallet_id = wallet_subscriptions.wallet_id
    union
    select wallet_id, starts_at from wallet_subscriptions
    union
    select wallet_id, ends_at from wallet_subscriptions where ends_at is not null

),

intervals as (

    select
        wallet_id,
        moment as valid_from,
        lead(moment) over (partition by wallet_id order by moment) as valid_to
    from boundaries

),

periods as (

    select
        intervals.wallet_id,
        intervals.valid_from,
        intervals.valid_to,
        {{ billing_period_start('intervals.valid_from', 'coalesce(wallet_subscriptions.billing_anchor_day, 1)') }}
            as billing_period_start
    from intervals
    left join wallet_subscriptions
        on
            intervals.wallet_id = wallet_subscriptions.wallet_id
            and {{ subscription_active_at('intervals.valid_from', 'wallet_subscriptions') }}
    where intervals.valid_to is not null

),

inputs as (

    select
        wallets.wallet_id,
        'wallet' as input_type,
        cast(null as {{ string_type() }}) as grant_id,
        cast(null as {{ string_type() }}) as grant_kind,
        cast(null as timestamp) as valid_from,
        cast(null as timestamp) as valid_to,
        cast(null as timestamp) as billing_period_start,
        wallets.auto_top_up_amount as amount,
        wallets.auto_top_up_threshold as threshold,
        wallets.auto_top_up_max_per_period as max_per_period,
        top_up_ranks.draw_rank
    from wallets
    inner join top_up_ranks on wallets.wallet_id = top_up_ranks.wallet_id

    union all

    select
        wallet_id,
        'grant',
        grant_id,
        kind,
        granted_at,
        expires_at,
        null,
        amount,
        null,
        null,
        draw_rank
    from ranked_grants

    union all

    select
        wallet_id,
        'charge',
        null,
        null,
        usage_hour,
        usage_hour + interval 1 hour,
        billing_period_start,
        amount,
        null,
        null,
        null
    from charges

    union all

    select wallet_id, 'period', null, null, valid_from, valid_to, billing_period_start, null, null, null, null
    from periods

)

select
    inputs.wallet_id,
    wallets.customer_id,
    wallets.currency,
    inputs.input_type,
    inputs.grant_id,
    inputs.grant_kind,
    cast(inputs.valid_from as timestamp) as valid_from,
    cast(inputs.valid_to as timestamp) as valid_to,
    cast(inputs.billing_period_start as timestamp) as billing_period_start,
    cast(inputs.amount as decimal(38, 18)) as amount,
    cast(inputs.threshold as decimal(38, 18)) as threshold,
    cast(inputs.max_per_period as integer) as max_per_period,
    cast(inputs.draw_rank as integer) as draw_rank
from inputs
inner join wallets on inputs.wallet_id = wallets.wallet_id
