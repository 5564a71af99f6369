{#- SQL that DuckDB and Spark spell differently (SPARK.md, "How the SQL is portable"). Each
    rule has one owner here: the default is the project's DuckDB SQL, unchanged, so DuckDB
    builds byte-identical tables; spark__ is the Spark 4 spelling of the same value. -#}

{#- An end that never comes: the open end of a validity interval (ends_at null). Spark has no
    infinite timestamp; its largest one serves (no event is dated in the year 9999). -#}
{% macro infinity_timestamp() -%}
    {{- return(adapter.dispatch('infinity_timestamp', 'tokenbill')()) -}}
{%- endmacro %}

{% macro default__infinity_timestamp() -%}'infinity'::timestamp{%- endmacro %}

{% macro spark__infinity_timestamp() -%}timestamp'9999-12-31 23:59:59.999999'{%- endmacro %}

{#- The escape character of a LIKE pattern (a catalog selector escapes its literal _ and %):
    a backslash; Spark's string literals escape it too. -#}
{% macro like_escape() -%}
    {{- return(adapter.dispatch('like_escape', 'tokenbill')()) -}}
{%- endmacro %}

{% macro default__like_escape() -%}'\'{%- endmacro %}

{% macro spark__like_escape() -%}'\\'{%- endmacro %}

{#- `* exclude (a, b)`: every column but these (Spark: `* except (a, b)`). -#}
{% macro star_except(columns) -%}
    {{- return(adapter.dispatch('star_except', 'tokenbill')(columns)) -}}
{%- endmacro %}

{% macro default__star_except(columns) -%}* exclude ({{ columns | join(', ') }}){%- endmacro %}

{% macro spark__star_except(columns) -%}* except ({{ columns | join(', ') }}){%- endmacro %}

{#- The keyword that makes DuckDB compute a CTE once (`name as materialized (...)`); Spark has
    none (it reuses a CTE's exchanges where it can). -#}
{% macro materialized_cte() -%}
    {{- return(adapter.dispatch('materialized_cte', 'tokenbill')()) -}}
{%- endmacro %}

{% macro default__materialized_cte() -%}materialized{%- endmacro %}

{% macro spark__materialized_cte() -%}{%- endmacro %}

{#- A number for each row of a relation: DuckDB numbers them in any order; Spark requires an
    order, `order_by`, which must be a total order of the rows (a key) so that every read of the
    CTE numbers them alike. -#}
{% macro row_number_any(order_by) -%}
    {{- return(adapter.dispatch('row_number_any', 'tokenbill')(order_by)) -}}
{%- endmacro %}

{% macro default__row_number_any(order_by) -%}row_number() over (){%- endmacro %}

{% macro spark__row_number_any(order_by) -%}row_number() over (order by {{ order_by }}){%- endmacro %}

{#- One row per element of a list column, in a select list (DuckDB unnest, Spark explode). -#}
{% macro unnest_list(list) -%}
    {{- return(adapter.dispatch('unnest_list', 'tokenbill')(list)) -}}
{%- endmacro %}

{% macro default__unnest_list(list) -%}unnest({{ list }}){%- endmacro %}

{% macro spark__unnest_list(list) -%}explode({{ list }}){%- endmacro %}

{#- One row per step from `start` to `stop` (both included), `step` an interval literal
    (`interval 1 day`), in a select list. -#}
{% macro unnest_series(start, stop, step) -%}
    {{- return(adapter.dispatch('unnest_series', 'tokenbill')(start, stop, step)) -}}
{%- endmacro %}

{% macro default__unnest_series(start, stop, step) -%}
    unnest(generate_series({{ start }}, {{ stop }}, {{ step }}))
{%- endmacro %}

{% macro spark__unnest_series(start, stop, step) -%}
    explode(sequence({{ start }}, {{ stop }}, {{ step }}))
{%- endmacro %}

{#- Integer division of integers, rounding toward minus infinity for the non-negative
    operands the project divides (DuckDB //, Spark div). -#}
{% macro integer_divide(numerator, denominator) -%}
    {{- return(adapter.dispatch('integer_divide', 'tokenbill')(numerator, denominator)) -}}
{%- endmacro %}

{% macro default__integer_divide(numerator, denominator) -%}({{ numerator }} // {{ denominator }}){%- endmacro %}

{% macro spark__integer_divide(numerator, denominator) -%}({{ numerator }} div {{ denominator }}){%- endmacro %}

{#- The strings of a group joined by `delimiter` in the order of `order_by` (optionally the
    distinct ones). -#}
{% macro string_agg_ordered(expression, delimiter, order_by, distinct=false) -%}
    {{- return(adapter.dispatch('string_agg_ordered', 'tokenbill')(expression, delimiter, order_by, distinct)) -}}
{%- endmacro %}

{% macro default__string_agg_ordered(expression, delimiter, order_by, distinct) -%}
    string_agg({% if distinct %}distinct {% endif %}{{ expression }}, {{ delimiter }} order by {{ order_by }})
{%- endmacro %}

{% macro spark__string_agg_ordered(expression, delimiter, order_by, distinct) -%}
    string_agg({% if distinct %}distinct {% endif %}{{ expression }}, {{ delimiter }}) within group (order by {{ order_by }})
{%- endmacro %}

{#- A timestamp as text, `format` in strftime codes (the ones used: %Y %m %d %H %M and a
    literal T, space, dash or colon); Spark's date_format gets the same layout in its pattern
    letters. -#}
{% macro format_timestamp(ts, format) -%}
    {{- return(adapter.dispatch('format_timestamp', 'tokenbill')(ts, format)) -}}
{%- endmacro %}

{% macro default__format_timestamp(ts, format) -%}strftime({{ ts }}, '{{ format }}'){%- endmacro %}

{% macro spark__format_timestamp(ts, format) -%}
    {%- set pattern = format
        | replace('T', "'T'") | replace('%Y', 'yyyy') | replace('%m', 'MM') | replace('%d', 'dd')
        | replace('%H', 'HH') | replace('%M', 'mm') -%}
    date_format({{ ts }}, '{{ pattern | replace("'", "''") }}')
{%- endmacro %}

{#- The integer type of a sum of bigints: DuckDB's sum(bigint) is a hugeint, Spark's a bigint
    (a union of both kinds of rows needs the same type). -#}
{% macro sum_of_bigint_type() -%}
    {{- return(adapter.dispatch('sum_of_bigint_type', 'tokenbill')()) -}}
{%- endmacro %}

{% macro default__sum_of_bigint_type() -%}hugeint{%- endmacro %}

{% macro spark__sum_of_bigint_type() -%}bigint{%- endmacro %}

{#- A catalog's space-separated names as a sorted list of the non-empty ones. -#}
{% macro sorted_words(text) -%}
    {{- return(adapter.dispatch('sorted_words', 'tokenbill')(text)) -}}
{%- endmacro %}

{% macro default__sorted_words(text) -%}
    list_sort(list_filter(string_split({{ text }}, ' '), name -> name <> ''))
{%- endmacro %}

{% macro spark__sorted_words(text) -%}
    array_sort(filter(split({{ text }}, ' '), name -> name <> ''))
{%- endmacro %}

{#- `union all by name` (DuckDB matches the branches' columns by name). Spark SQL has no such
    union: where a model uses this, its branches list their columns in the same order, and
    Spark's positional union gives the same rows. -#}
{% macro union_all_by_name() -%}
    {{- return(adapter.dispatch('union_all_by_name', 'tokenbill')()) -}}
{%- endmacro %}

{% macro default__union_all_by_name() -%}union all by name{%- endmacro %}

{% macro spark__union_all_by_name() -%}union all{%- endmacro %}

{#- The list of a group's rows as structs of `fields` (column names), an aggregate. -#}
{% macro struct_list(fields) -%}
    {{- return(adapter.dispatch('struct_list', 'tokenbill')(fields)) -}}
{%- endmacro %}

{% macro default__struct_list(fields) -%}
    list(
        struct_pack(
            {%- for field in fields %}
            {{ field }} := {{ field }}{% if not loop.last %},{% endif %}
            {%- endfor %}
        )
    )
{%- endmacro %}

{% macro spark__struct_list(fields) -%}
    collect_list(
        named_struct(
            {%- for field in fields %}
            '{{ field }}', {{ field }}{% if not loop.last %},{% endif %}
            {%- endfor %}
        )
    )
{%- endmacro %}

{#- The sum of a money `expression` over the elements of `list`, each named `element` in it:
    null for a null list (DuckDB also for an empty one; callers coalesce both to 0). Spark folds
    with aggregate(), each step cast back to decimal(38, 18) (its lambda must keep one type);
    a null element counts 0 there, as list_sum skips it. -#}
{% macro list_sum_over(list, element, expression) -%}
    {{- return(adapter.dispatch('list_sum_over', 'tokenbill')(list, element, expression)) -}}
{%- endmacro %}

{% macro default__list_sum_over(list, element, expression) -%}
    list_sum(list_transform({{ list }}, {{ element }} ->
        {{ expression }}
    ))
{%- endmacro %}

{% macro spark__list_sum_over(list, element, expression) -%}
    aggregate({{ list }}, cast(0 as decimal(38, 18)), (total, {{ element }}) ->
        cast(total + coalesce({{ expression }}, 0) as decimal(38, 18))
    )
{%- endmacro %}

{#- floor(numerator x multiplier / denominator) of non-negative decimal(38, 18) amounts, exact:
    DuckDB's is whole_quotient (macros/agent_runs.sql, integer division of the unscaled
    hugeints); Spark's div divides the decimals exactly (to a bigint). -#}
{% macro amount_quotient(numerator, denominator, multiplier=1) -%}
    {{- return(adapter.dispatch('amount_quotient', 'tokenbill')(numerator, denominator, multiplier)) -}}
{%- endmacro %}

{% macro default__amount_quotient(numerator, denominator, multiplier) -%}
    {{- whole_quotient(numerator, denominator, multiplier) -}}
{%- endmacro %}

{% macro spark__amount_quotient(numerator, denominator, multiplier) -%}
    (
        cast({{ numerator }} as decimal(38, 18)) * {{ multiplier }}
        div cast({{ denominator }} as decimal(38, 18))
    )
{%- endmacro %}

{#- The materialization of the wallet marts: views on DuckDB; tables on Spark, where a view is
    recomputed with its whole chain of views (ledger, balances, runway, spikes) by every read,
    each data test one read. A run that selects them rebuilds them (SPARK.md). -#}
{% macro view_materialization() -%}
    {{- return('table' if target.type == 'spark' else 'view') -}}
{%- endmacro %}
