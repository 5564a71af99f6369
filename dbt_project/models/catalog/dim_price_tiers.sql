select
    price_id,
    price_version,
    tier,
    lower_tokens,
    upper_tokens,
    unit_price_per_token,
    flat_fee
from {{ source('catalog', 'price_tiers') }}
