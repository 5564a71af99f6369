"""The code location loads, with the assets, groups, partitions and checks operators rely on."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dagster import AssetKey, BackfillPolicy, EnvVar

from orchestration.definitions import defs
from orchestration.settings import SETTINGS

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _graph():
    return defs.resolve_asset_graph()


def definitions_snapshot() -> dict:
    """What operators see: assets (group, partitions, parents, owners, freshness, checks),
    jobs, schedules and sensors."""
    graph = _graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": type(node.partitions_def).__name__ if node.partitions_def else None,
            "parents": sorted(p.to_user_string() for p in node.parent_keys),
            "owners": list(node.owners),
            "freshness": type(node.freshness_policy).__name__ if node.freshness_policy else None,
            "has_description": bool(node.description),
            "checks": sorted(c.name for c in graph.asset_check_keys if c.asset_key == key),
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in defs.jobs),
        "schedules": sorted(s.name for s in defs.schedules or []),
        "sensors": sorted(s.name for s in defs.sensors or []),
    }


def test_definitions_match_the_snapshot():
    """Catches unintended changes to the graph; after an intended one, refresh it with
    ``UPDATE_SNAPSHOTS=1 make test`` and review the diff of tests/snapshots/definitions.json."""
    current = definitions_snapshot()
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_asset_has_a_group_and_a_description():
    for key, asset in definitions_snapshot()["assets"].items():
        assert asset["group"] not in (None, "default"), key
        assert asset["has_description"], key


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
    # The hourly mart reads the raw events through the staging SQL (macros/usage_events.sql),
    # not the staging view.
    assert AssetKey(["raw_usage_events"]) in hourly.parent_keys
    assert AssetKey(["staging", "stg_tokenbill__usage_events"]) not in hourly.parent_keys


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


#: resource key -> field -> the setting it is bound to.
BOUND_SETTINGS = {
    "s3": {
        "bucket": "TOKENBILL_S3_BUCKET",
        "prefix": "TOKENBILL_S3_PREFIX",
        "export_prefix": "TOKENBILL_EXPORT_PREFIX",
        "enforcement_key": "TOKENBILL_ENFORCEMENT_KEY",
        "alerts_prefix": "TOKENBILL_ALERTS_PREFIX",
    },
    "warehouse": {
        "path": "TOKENBILL_WAREHOUSE_PATH",
        "memory_limit": "TOKENBILL_DUCKDB_MEMORY_LIMIT",
        "analyst_dir": "TOKENBILL_ANALYST_DIR",
        "engine": "TOKENBILL_ENGINE",
        "lake_root": "TOKENBILL_LAKE_ROOT",
        "spark_warehouse": "TOKENBILL_SPARK_WAREHOUSE",
        "spark_master": "TOKENBILL_SPARK_MASTER",
    },
    "catalog_dir": {"path": "TOKENBILL_CATALOG_DIR"},
    "ingestion": {
        "quarantine_warn_rate": "TOKENBILL_QUARANTINE_WARN_RATE",
        "engine": "TOKENBILL_ENGINE",
        "lake_root": "TOKENBILL_LAKE_ROOT",
    },
    "dbt": {"invoice_grace_days": "TOKENBILL_INVOICE_GRACE_DAYS", "engine": "TOKENBILL_ENGINE"},
}


def test_each_domain_owns_its_definitions_and_the_root_merges_them():
    from orchestration.defs.alerts import definitions as alerts
    from orchestration.defs.dbt import definitions as dbt
    from orchestration.defs.enforcement import definitions as enforcement
    from orchestration.defs.ingestion import definitions as ingestion
    from orchestration.defs.invoicing import definitions as invoicing
    from orchestration.defs.operations import definitions as operations
    from orchestration.defs.publishing import definitions as publishing
    from orchestration.defs.rating import definitions as rating
    from orchestration.defs.wallets import definitions as wallets

    def keys(domain) -> set[str]:
        return {key.to_user_string() for a in domain.build_defs().assets or [] for key in a.keys}

    owned = [
        keys(d)
        for d in (rating, ingestion, dbt, enforcement, wallets, invoicing, alerts, publishing)
    ]
    assert sum(len(k) for k in owned) == len(set().union(*owned))  # no asset in two domains
    assert set().union(*owned) == set(definitions_snapshot()["assets"])
    assert keys(rating) and all(k.startswith("catalog/") for k in keys(rating))
    assert keys(publishing) == {"analyst_snapshot"}
    ops = operations.build_defs()
    assert sorted(j.name for j in ops.jobs) == definitions_snapshot()["jobs"]
    assert not ops.assets and not ops.resources
    assert set(defs.resources) == set(BOUND_SETTINGS)


def test_every_resource_field_is_bound_to_its_setting(monkeypatch):
    from orchestration.definitions import build_defs

    for fields in BOUND_SETTINGS.values():
        for name in fields.values():
            monkeypatch.setenv(name, f"value of {name}")
    bound = build_defs().resources
    for key, fields in BOUND_SETTINGS.items():
        for field, name in fields.items():
            value = getattr(bound[key], field)
            assert isinstance(value, EnvVar) and value.env_var_name == name, (key, field)
    for fields in BOUND_SETTINGS.values():
        for name in fields.values():
            monkeypatch.delenv(name, raising=False)  # a setting may bind two fields
    defaults = build_defs().resources
    for key, fields in BOUND_SETTINGS.items():
        for field, name in fields.items():
            assert getattr(defaults[key], field) == SETTINGS[name][0], (key, field)
