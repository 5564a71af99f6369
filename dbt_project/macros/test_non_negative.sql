{#- Generic test: no value of the column is negative (in the run's window, see window_filter). -#}
{% test non_negative(model, column_name) %}
select {{ column_name }} from {{ model }}
where {{ window_filter(model) }} and {{ column_name }} < 0
{% endtest %}
