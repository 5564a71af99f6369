{#- Helpers of the rating models. -#}

{#- Start of the billing period containing `ts` for a monthly period anchored on `anchor_day`
    (1 = calendar month). -#}
{% macro billing_period_start(ts, anchor_day) -%}
    case
        when {{ ts }} >= {{ dbt.dateadd('day', anchor_day ~ ' - 1', dbt.date_trunc('month', ts)) }}
            then {{ dbt.dateadd('day', anchor_day ~ ' - 1', dbt.date_trunc('month', ts)) }}
        else {{ dbt.dateadd('month', -1, dbt.dateadd('day', anchor_day ~ ' - 1', dbt.date_trunc('month', ts))) }}
    end
{%- endmacro %}

{#- True when the subscription `subscription` (an alias of dim_subscriptions) is active at `ts`:
    from starts_at (inclusive) to ends_at (exclusive, null = open). Written without OR, so that
    a join on it hashes on its equal keys. With billing_period_start, the rule that labels an
    instant with its subscription's billing period (rating, wallet draw-down, credits, invoices). -#}
{% macro subscription_active_at(ts, subscription) -%}
    {{ ts }} >= {{ subscription }}.starts_at
    and {{ ts }} < coalesce({{ subscription }}.ends_at, {{ infinity_timestamp() }})
{%- endmacro %}

{#- Whole-number division of non-negative integers, rounding down or up. -#}
{% macro int_div(numerator, denominator, rounding='down') -%}
    {%- if rounding == 'up' -%}
        {{ integer_divide('(' ~ numerator ~ ' + ' ~ denominator ~ ' - 1)', denominator) }}
    {%- else -%}
        {{ integer_divide(numerator, denominator) }}
    {%- endif -%}
{%- endmacro %}

{#- Amount of graduated tiers over (b, t]: each tier prices the tokens that fall in it, and its
    flat fee is charged once when usage first enters it. Per-unit prices are one tier. -#}
{% macro graduated_amount(b, t, tier) -%}
    {{ tier }}.unit_price_per_token * (
        least(greatest({{ t }}, {{ tier }}.lower_tokens), coalesce({{ tier }}.upper_tokens, greatest({{ t }}, {{ tier }}.lower_tokens)))
        - least(greatest({{ b }}, {{ tier }}.lower_tokens), coalesce({{ tier }}.upper_tokens, greatest({{ b }}, {{ tier }}.lower_tokens)))
    )
    + {{ tier }}.flat_fee * (
        case when {{ t }} > {{ tier }}.lower_tokens then 1 else 0 end
        - case when {{ b }} > {{ tier }}.lower_tokens then 1 else 0 end
    )
{%- endmacro %}

{#- Volume tiers: the whole quantity is priced at the tier it falls in (plus its flat fee). -#}
{% macro volume_value(q, tier) -%}
    case
        when {{ q }} > {{ tier }}.lower_tokens and ({{ tier }}.upper_tokens is null or {{ q }} <= {{ tier }}.upper_tokens)
            then {{ q }} * {{ tier }}.unit_price_per_token + {{ tier }}.flat_fee
        else 0
    end
{%- endmacro %}

{#- The unscaled integer of an amount as a decimal(38, 18): its digits without the point, as a
    hugeint (DuckDB has no cast that keeps them: a decimal cast to an integer rounds). -#}
{% macro unscaled_hugeint(amount) -%}
    cast(replace(cast(cast({{ amount }} as decimal(38, 18)) as varchar), '.', '') as hugeint)
{%- endmacro %}

{#- amount * numerator / denominator, exact to 18 decimals (truncated), without floating
    point: DuckDB's decimal division returns a double, so the division is done on the amount's
    unscaled integer (its decimal(38, 18) digits without the point, as a hugeint). Used for
    time proration of non-negative amounts. -#}
{% macro prorate(amount, numerator, denominator) -%}
    {{- return(adapter.dispatch('prorate', 'tokenbill')(amount, numerator, denominator)) -}}
{%- endmacro %}

{% macro default__prorate(amount, numerator, denominator) -%}
    cast(
        cast(
            {{ unscaled_hugeint(amount) }} * {{ numerator }} // {{ denominator }}
            as decimal(38, 0)
        ) * cast(0.000000000000000001 as decimal(38, 18))
        as decimal(38, 18)
    )
{%- endmacro %}

{#- Spark (decimal operations without precision loss, SPARK.md) has no hugeint and no integer
    division of decimals: the unscaled amount is a decimal(38, 0), and floor() of its quotient
    by the denominator as a decimal(7, 0) is exact: the quotient keeps 8 decimals, and a
    remainder r/d with d < 10^7 never rounds up to the next integer there. The denominator
    (seconds of a billing period, at most 2,678,400) must stay below 10^7: a larger one fails
    the cast (ANSI mode) rather than round. -#}
{% macro spark__prorate(amount, numerator, denominator) -%}
    cast(
        cast(
            floor(
                cast(replace(cast(cast({{ amount }} as decimal(38, 18)) as string), '.', '') as decimal(38, 0))
                * {{ numerator }}
                / cast({{ denominator }} as decimal(7, 0))
            )
            as decimal(38, 0)
        ) * cast(0.000000000000000001 as decimal(38, 18))
        as decimal(38, 18)
    )
{%- endmacro %}

{#- Round an exact amount to its currency's minor unit, half away from zero (DuckDB's round on
    decimals), keeping decimal(38, 18). The exponent is per row; round() needs a constant, so
    each ISO 4217 exponent in use (0, 2, 3) is a branch. -#}
{% macro round_to_minor_unit(amount, exponent) -%}
    case {{ exponent }}
        when 0 then cast(round({{ amount }}, 0) as decimal(38, 18))
        when 3 then cast(round({{ amount }}, 3) as decimal(38, 18))
        else cast(round({{ amount }}, 2) as decimal(38, 18))
    end
{%- endmacro %}

{#- The moment invoices are judged at: the `as_of` var, else TOKENBILL_DBT_AS_OF (Dagster's
    run tag tokenbill/as_of), else the start of this dbt run. -#}
{% macro as_of() -%}
    cast('{{ run_setting("as_of", "TOKENBILL_DBT_AS_OF", run_started_at.strftime("%Y-%m-%dT%H:%M:%S")) }}' as timestamp)
{%- endmacro %}

{#- Days a finalized invoice waits after its period: the `invoice_grace_days` var, else
    TOKENBILL_INVOICE_GRACE_DAYS (Dagster's setting), else 3. -#}
{% macro invoice_grace_days() -%}
    {{- run_setting("invoice_grace_days", "TOKENBILL_INVOICE_GRACE_DAYS", "3") -}}
{%- endmacro %}

{#- The priced-usage rows (int_rating__priced_usage) that are unpriced usage: billable usage no
    price rates. fct_unpriced_usage is these rows; int_agent_runs__attempt_costs reads them from
    the priced usage too, so that the all_usage_is_priced test failing on fct_unpriced_usage (a
    non-blocking check, but an error in dbt, which skips the failed test's children) never
    leaves an hour without its attempt costs. Token meters without a price, any meter with an
    ambiguous price or an unknown provider cost; usage billable under a subscription, or of a
    customer without one. -#}
{% macro is_unpriced_usage() -%}
    (
        unpriced_reason is not null
        and (
            meter in ('uncached_input', 'cached_input', 'cache_write', 'output')
            or unpriced_reason in ('ambiguous_price', 'unknown_provider_cost')
        )
        and (billable_quantity > 0 or subscription_id is null)
    )
{%- endmacro %}
