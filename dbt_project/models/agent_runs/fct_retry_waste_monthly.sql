{{
    config(
        schema='marts',
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'spark' else none),
        partition_by=(['usage_month'] if target.type == 'spark' else none),
        on_schema_change='fail',
        tags=['monthly'],
        pre_hook="{{ delete_window('usage_month') }}",
    )
}}

-- What failed, retried and cancelled attempts cost and what was billed for them, per month,
-- customer, model and feature: "you pay the provider for three attempts but bill one" made
-- visible. Wasted attempts are the attempts whose status is not success. Their billed amount
-- is whatever the rating billed (only quantity the plan's bill_failed_attempts makes
-- billable is charged); shares are ratios (not money), rounded to 6 decimals. Reads the
-- attempts' costs computed once per hour (int_agent_runs__attempt_costs).

with

attempt_costs as (

    select * from {{ ref('int_agent_runs__attempt_costs') }}
    where {{ in_window('usage_hour') }}

),

month_attempts as (

    select
        cast({{ dbt.date_trunc('month', 'usage_hour') }} as date) as usage_month,
        *,
        status <> 'success' as is_wasted
    from attempt_costs

),

aggregated as (

    select
        usage_month,
        customer_id,
        model,
        feature,
        max(currency) as currency,
        count(*) as attempts,
        count(*) filter (where status = 'failed') as failed_attempts,
        count(*) filter (where status = 'retried') as retried_attempts,
        count(*) filter (where status = 'cancelled') as cancelled_attempts,
        count(*) filter (where is_wasted) as wasted_attempts,
        sum(total_tokens) as total_tokens,
        coalesce(sum(total_tokens) filter (where is_wasted), 0) as wasted_tokens,
        {{ known_sum('provider_cost') }} as provider_cost,
        case
            when count(*) filter (where is_wasted) = count(provider_cost) filter (where is_wasted)
                then coalesce(sum(provider_cost) filter (where is_wasted), 0)
        end as wasted_provider_cost,
        {{ known_sum('billed_amount') }} as billed_amount,
        case
            when count(*) filter (where is_wasted) = count(billed_amount) filter (where is_wasted)
                then coalesce(sum(billed_amount) filter (where is_wasted), 0)
        end as wasted_billed_amount
    from month_attempts
    group by usage_month, customer_id, model, feature

)

select
    usage_month,
    customer_id,
    model,
    feature,
    currency,
    cast(attempts as bigint) as attempts,
    cast(failed_attempts as bigint) as failed_attempts,
    cast(retried_attempts as bigint) as retried_attempts,
    cast(cancelled_attempts as bigint) as cancelled_attempts,
    cast(wasted_attempts as bigint) as wasted_attempts,
    cast(total_tokens as bigint) as total_tokens,
    cast(wasted_tokens as bigint) as wasted_tokens,
    cast(provider_cost as decimal(38, 18)) as provider_cost,
    cast(wasted_provider_cost as decimal(38, 18)) as wasted_provider_cost,
    cast(billed_amount as decimal(38, 18)) as billed_amount,
    cast(wasted_billed_amount as decimal(38, 18)) as wasted_billed_amount,
    cast(
        case when total_tokens > 0 then round(wasted_tokens / total_tokens, 6) end
        as decimal(9, 6)
    ) as wasted_token_share,
    cast(
        case when provider_cost > 0 then round(wasted_provider_cost / provider_cost, 6) end
        as decimal(9, 6)
    ) as wasted_cost_share,
    cast(
        case when billed_amount > 0 then round(wasted_billed_amount / billed_amount, 6) end
        as decimal(9, 6)
    ) as wasted_billed_share
from aggregated
