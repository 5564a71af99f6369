select
    subscriptions.subscription_id,
    subscriptions.customer_id,
    subscriptions.plan_id,
    plans.currency,
    subscriptions.starts_at,
    subscriptions.ends_at,
    subscriptions.billing_anchor_day
from {{ source('catalog', 'subscriptions') }} as subscriptions
inner join {{ source('catalog', 'plans') }} as plans on subscriptions.plan_id = plans.plan_id
