{#- Generic test, severity warn: every row of the run's window has a known provider cost.
    Fails with one row per model the cost card does not price (name_columns, e.g. provider
    and model), so the check says which models to add to catalog/provider_costs.csv. -#}
{% test provider_cost_is_known(model, period_column, name_columns) %}
select
    {% for column in name_columns %}{{ column }},{% endfor %}
    count(*) as rows_without_cost
from {{ model }}
where {{ in_window(period_column) }} and provider_cost is null
group by all
{% endtest %}
