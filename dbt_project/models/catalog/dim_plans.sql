select
    plan_id,
    name as plan_name,
    currency,
    bill_failed_attempts,
    platform_fee,
    minimum_spend
from {{ source('catalog', 'plans') }}
