"""The code location loads, with the assets, groups, partitions and checks operators rely on."""

from __future__ import annotations

from dagster import AssetKey, BackfillPolicy

from orchestration.definitions import defs


def _graph():
    return defs.resolve_asset_graph()


def test_code_location_loads_every_asset_in_its_group():
    graph = _graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "raw_usage_events": "ingestion",
        "staging/stg_tokenbill__usage_events": "staging",
        "marts/fct_token_usage_hourly": "token_usage",
        "marts/fct_token_usage_daily": "token_usage",
        "marts/fct_token_usage_monthly": "token_usage",
    }


def test_each_grain_is_partitioned_and_backfills_in_a_single_run():
    graph = _graph()
    expected = {
        "raw_usage_events": "Hourly",
        "marts/fct_token_usage_hourly": "Hourly",
        "marts/fct_token_usage_daily": "Daily",
        "marts/fct_token_usage_monthly": "Monthly",
    }
    for key, kind in expected.items():
        node = graph.get(AssetKey.from_user_string(key))
        assert type(node.partitions_def).__name__ == f"{kind}PartitionsDefinition", key
        assert node.backfill_policy == BackfillPolicy.single_run(), key


def test_daily_depends_on_hourly_and_monthly_on_daily():
    graph = _graph()
    daily = graph.get(AssetKey(["marts", "fct_token_usage_daily"]))
    monthly = graph.get(AssetKey(["marts", "fct_token_usage_monthly"]))
    hourly = graph.get(AssetKey(["marts", "fct_token_usage_hourly"]))
    assert AssetKey(["marts", "fct_token_usage_hourly"]) in daily.parent_keys
    assert AssetKey(["marts", "fct_token_usage_daily"]) in monthly.parent_keys
    assert AssetKey(["staging", "stg_tokenbill__usage_events"]) in hourly.parent_keys


def test_reconciliation_and_ingestion_checks_are_asset_checks():
    names = {(k.asset_key.to_user_string(), k.name) for k in _graph().asset_check_keys}
    assert {
        ("raw_usage_events", "lines_reconcile"),
        ("raw_usage_events", "quarantine_rate"),
        ("marts/fct_token_usage_daily", "daily_reconciles_with_hourly"),
        ("marts/fct_token_usage_monthly", "monthly_reconciles_with_daily"),
    } <= names


def test_jobs_exist_per_grain():
    assert {j.name for j in defs.jobs} >= {
        "hourly_usage_job",
        "daily_usage_job",
        "monthly_usage_job",
    }
