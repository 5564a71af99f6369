{#- Generic test: the model's measures equal the compared model's, summed per key and period,
    for every period of the run's window. Returns the rows that differ. Null-safe on keys; a
    measure with a null (an unknown provider cost) sums to null on both sides (known_sum). -#}
{% test reconciles_with(model, compare_model, period_column, compare_period_expr, keys, measures) %}

with this_side as (
    select
        {{ period_column }} as period,
        {% for key in keys %}{{ key }},{% endfor %}
        {% for m in measures %}{{ known_sum(m) }} as {{ m }}{% if not loop.last %},{% endif %}{% endfor %}
    from {{ model }}
    where {{ in_window(period_column) }}
    group by all
),

other_side as (
    select
        {{ compare_period_expr }} as period,
        {% for key in keys %}{{ key }},{% endfor %}
        {% for m in measures %}{{ known_sum(m) }} as {{ m }}{% if not loop.last %},{% endif %}{% endfor %}
    from {{ compare_model }}
    where {{ in_window(compare_period_expr) }}
    group by all
)

select
    coalesce(this_side.period, other_side.period) as period,
    {% for key in keys %}coalesce(this_side.{{ key }}, other_side.{{ key }}) as {{ key }},{% endfor %}
    {% for m in measures %}
    this_side.{{ m }} as {{ m }}_here,
    other_side.{{ m }} as {{ m }}_compared{% if not loop.last %},{% endif %}
    {% endfor %}
from this_side
full outer join other_side
    on this_side.period = other_side.period
    {% for key in keys %}
    and this_side.{{ key }} is not distinct from other_side.{{ key }}
    {% endfor %}
where
    {% for m in measures %}
    this_side.{{ m }} is distinct from other_side.{{ m }}{% if not loop.last %} or{% endif %}
    {% endfor %}

{% endtest %}
