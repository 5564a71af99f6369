-- Provider list prices per token. Where the card has no cache or reasoning price, the
-- provider bills those tokens at the plain input / output price. A row answers to its model
-- and to its aliases (other names of the same prices: LiteLLM keys, regional and dated
-- variants); the catalog load checks that a name belongs to one row at a time.
select
    provider,
    model,
    cast(effective_from as timestamp) as effective_from,
    cast(effective_to as timestamp) as effective_to,
    input_per_token,
    output_per_token,
    coalesce(cache_read_per_token, input_per_token) as cache_read_per_token,
    coalesce(cache_write_per_token, input_per_token) as cache_write_per_token,
    coalesce(reasoning_per_token, output_per_token) as reasoning_per_token,
    coalesce(input_above_200k_per_token, input_per_token) as input_above_200k_per_token,
    coalesce(output_above_200k_per_token, output_per_token) as output_above_200k_per_token,
    coalesce(cache_read_above_200k_per_token, cache_read_per_token, input_per_token)
        as cache_read_above_200k_per_token,
    coalesce(cache_write_above_200k_per_token, cache_write_per_token, input_per_token)
        as cache_write_above_200k_per_token,
    source,
    {{ sorted_words("coalesce(aliases, '')") }}
        as aliases
from {{ source('catalog', 'provider_costs') }}
