{#- Generic test: every value of the column is one of `values` (nulls aside), in the run's
    window (see window_filter). -#}
{% test accepted_values_in_window(model, column_name, values) %}
select {{ column_name }}, count(*) as row_count
from {{ model }}
where
    {{ window_filter(model) }}
    and {{ column_name }} is not null
    and {{ column_name }} not in ({% for v in values %}'{{ v }}'{% if not loop.last %}, {% endif %}{% endfor %})
group by {{ column_name }}
{% endtest %}
