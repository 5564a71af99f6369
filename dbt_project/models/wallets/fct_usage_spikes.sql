{{ config(schema='marts', materialized=view_materialization(), tags=['monthly']) }}

-- Usage spikes: an hour or a UTC day whose tokens (total_tokens) or billed amount (rated
-- charges, before credits) exceed factor x the trailing baseline, per customer (model null)
-- and per customer and model. The baseline is the average per period over the
-- spike_baseline_hours (168) hours or spike_baseline_days (7) days before the period, periods
-- without usage counting as 0; the factor is spike_factor_hour (20) or spike_factor_day (5)
-- (LLM usage is bursty: an hour is often several times its weekly average). A period is
-- judged only once its customer (or customer and model) has that much history, when its
-- baseline is above 0 and when the value is material: at least spike_min_tokens (1,000,000)
-- tokens, or spike_min_amount (10) in the customer's currency.
-- value > factor x baseline is compared exactly (value x periods > factor x baseline total,
-- no division). Settings: dbt vars (dbt_project.yml).

{% set grains = {'hour': var('spike_baseline_hours', 168) | int, 'day': var('spike_baseline_days', 7) | int} %}
{% set factors = {'hour': var('spike_factor_hour', '20'), 'day': var('spike_factor_day', '5')} %}
{% set minimums = {'tokens': var('spike_min_tokens', 1000000), 'amount': var('spike_min_amount', '10')} %}

with

hourly_tokens as (

    select usage_hour, customer_id, model, sum(total_tokens) as tokens
    from {{ ref('fct_token_usage_hourly') }}
    group by all

),

hourly_amount as (

    select usage_hour, customer_id, model, currency, sum(amount) as amount
    from {{ ref('fct_rated_charges_hourly') }}
    group by all

),

series as (

    {% for grain in grains %}
    {% for level in ['customer', 'model'] %}
    {% for metric in ['tokens', 'amount'] %}
    select
        '{{ grain }}' as grain,
        '{{ metric }}' as metric,
        {{ dbt.date_trunc(grain, 'usage_hour') }} as period_start,
        customer_id,
        {% if level == 'model' %}model{% else %}cast(null as {{ string_type() }}){% endif %} as model,
        {% if metric == 'amount' %}currency{% else %}cast(null as {{ string_type() }}){% endif %} as currency,
        cast(sum({{ metric }}) as decimal(38, 18)) as value
    from hourly_{{ metric }}
    group by all
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

baselined as (

    {% for grain, periods in grains.items() %}
    select
        *,
        {{ periods }} as baseline_periods,
        cast({{ factors[grain] }} as decimal(9, 3)) as factor,
        coalesce(sum(value) over baseline_{{ grain }}, 0) as baseline_total,
        min(period_start) over (partition by grain, metric, customer_id, model, currency)
            as first_period
    from series
    where grain = '{{ grain }}'
    window baseline_{{ grain }} as (
        partition by grain, metric, customer_id, model, currency
        order by period_start
        range between interval {{ periods }} {{ grain }} preceding and interval 1 {{ grain }} preceding
    )
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

spikes as (

    select *
    from baselined
    where
        baseline_total > 0
        and value * baseline_periods > factor * baseline_total
        and (
            (grain = 'hour' and period_start >= first_period + interval {{ grains['hour'] }} hour)
            or (grain = 'day' and period_start >= first_period + interval {{ grains['day'] }} day)
        )
        and value >= case metric
            when 'tokens' then {{ minimums['tokens'] }}
            else cast({{ minimums['amount'] }} as decimal(38, 18))
        end

),

subscriptions as (

    select * from {{ ref('dim_subscriptions') }}

)

select
    spikes.grain,
    spikes.metric,
    cast(spikes.period_start as timestamp) as period_start,
    spikes.customer_id,
    spikes.model,
    coalesce(spikes.currency, customers.currency) as currency,
    cast(
        coalesce(
            {{ billing_period_start('spikes.period_start', 'subscriptions.billing_anchor_day') }},
            {{ dbt.date_trunc('month', 'spikes.period_start') }}
        ) as timestamp
    ) as billing_period_start,
    spikes.value,
    {{ prorate('spikes.baseline_total', 1, 'spikes.baseline_periods') }} as baseline,
    cast(spikes.baseline_periods as integer) as baseline_periods,
    cast(spikes.factor as decimal(38, 18)) as factor
from spikes
left join {{ ref('dim_customers') }} as customers on spikes.customer_id = customers.customer_id
left join subscriptions
    on
        spikes.customer_id = subscriptions.customer_id
        and spikes.period_start >= subscriptions.starts_at
        and spikes.period_start < coalesce(subscriptions.ends_at, {{ infinity_timestamp() }})
