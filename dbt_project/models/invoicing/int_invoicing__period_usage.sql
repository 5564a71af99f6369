{{ config(materialized='table') }}

-- The rated usage of each billing period starting in the window, per subscription, price and
-- meter: the hourly charges summed once. A table rebuilt by every monthly run (it holds that
-- window only). The hours read are bounded: a period starting in the window ends within a
-- month of the window's end (anchor days are 1-28), so the scan of fct_rated_charges_hourly
-- never reaches earlier periods.

select
    subscription_id,
    billing_period_start,
    price_id,
    meter,
    max(price_version) as price_version,
    count(distinct price_version) as price_versions,
    sum(billable_quantity) as quantity,
    sum(uncapped_amount) as amount,
    sum(forgiven_amount) as forgiven_amount
from {{ ref('fct_rated_charges_hourly') }}
where
    usage_hour >= {{ window_start() }}
    and usage_hour < {{ dbt.dateadd('month', 1, window_end()) }}
    and {{ in_window('billing_period_start') }}
group by subscription_id, billing_period_start, price_id, meter
