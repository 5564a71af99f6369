{#- Generic test: at most one row per combination of the columns (nulls compare equal), in the
    run's window (see window_filter). -#}
{% test unique_grain(model, columns) %}
select {{ columns | join(', ') }}, count(*) as row_count
from {{ model }}
where {{ window_filter(model) }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
