{#- Generic test: the model has no row in the run's window (e.g. no unpriced usage). -#}
{% test no_rows_in_window(model, period_column) %}
select * from {{ model }} where {{ in_window(period_column) }}
{% endtest %}
