"""The instance storage writes a ranged run's asset events in batches, and what it stores is
what Dagster's own SQLite storage stores event by event."""

from __future__ import annotations

import shutil
from collections import Counter
from importlib.metadata import version as package_version

import pytest
from dagster import (
    AssetKey,
    BackfillPolicy,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    EventRecordsFilter,
    HourlyPartitionsDefinition,
    asset,
    define_asset_job,
)

from orchestration import storage as storage_module
from orchestration.settings import REPO_ROOT
from orchestration.storage import TESTED_DAGSTER, BatchingSqliteEventLogStorage, internals_problems

HOURS = HourlyPartitionsDefinition(start_date="2026-10-01-00:00", timezone="UTC")


@asset(partitions_def=HOURS, backfill_policy=BackfillPolicy.single_run())
def hourly_thing(context) -> None:
    context.log.info(f"{len(context.partition_keys)} hours")


@asset(partitions_def=HOURS, backfill_policy=BackfillPolicy.single_run(), deps=[hourly_thing])
def hourly_child() -> None:
    pass


DEFS = Definitions(
    assets=[hourly_thing, hourly_child],
    jobs=[define_asset_job("hours")],
)
RANGE = {
    "dagster/asset_partition_range_start": "2026-10-01-00:00",
    "dagster/asset_partition_range_end": "2026-10-02-23:00",
}


def _instance(home, project_yaml: bool) -> DagsterInstance:
    home.mkdir()
    if project_yaml:
        shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    return DagsterInstance.from_config(str(home))


def _run_range(instance: DagsterInstance) -> None:
    result = DEFS.resolve_job_def("hours").execute_in_process(instance=instance, tags=RANGE)
    assert result.success


def _stored(instance: DagsterInstance) -> dict:
    """What the UI and the asset graph read: per asset, materialized partitions, the counts of
    planned and done events by partition, and the latest materialization."""
    out = {}
    for key in (AssetKey("hourly_thing"), AssetKey("hourly_child")):
        by_type = {}
        for kind in (
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        ):
            records = instance.get_event_records(EventRecordsFilter(kind, asset_key=key))
            by_type[kind.value] = Counter(r.partition_key for r in records)
        latest = instance.get_latest_materialization_event(key)
        out[key.to_user_string()] = {
            "materialized": sorted(instance.get_materialized_partitions(key)),
            "events": by_type,
            "latest_partition": latest.dagster_event.partition,
            "last_run": instance.get_asset_records([key])[0].asset_entry.last_run_id is not None,
        }
    return out


def test_a_ranged_run_is_stored_in_batches_the_same_as_event_by_event(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    stock = _instance(tmp_path / "stock", project_yaml=False)
    _run_range(stock)

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "batching"))
    batching = _instance(tmp_path / "batching", project_yaml=True)
    storage = batching.event_log_storage
    assert isinstance(storage, BatchingSqliteEventLogStorage)
    single, batched = Counter(), Counter()
    store_event, store_event_batch = storage.store_event, storage.store_event_batch

    def count_single(event):
        single[event.dagster_event_type] += 1
        return store_event(event)

    def count_batch(events):
        batched[len(events)] += 1
        return store_event_batch(events)

    monkeypatch.setattr(storage, "store_event", count_single)
    monkeypatch.setattr(storage, "store_event_batch", count_batch)
    _run_range(batching)

    expected = _stored(stock)
    assert _stored(batching) == expected
    assert len(expected["hourly_thing"]["materialized"]) == 48
    # 48 planned + 48 done events per asset, none of them written one at a time.
    assert single[DagsterEventType.ASSET_MATERIALIZATION] == 0
    assert single[DagsterEventType.ASSET_MATERIALIZATION_PLANNED] == 0
    assert batched == {96: 1, 48: 2}  # the run's planned events, then each step's output


def test_the_storage_needs_a_home_or_a_base_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    from orchestration.storage import TokenbillSqliteStorage

    with pytest.raises(RuntimeError, match="DAGSTER_HOME"):
        TokenbillSqliteStorage.from_config_value(None, {})
    storage = TokenbillSqliteStorage.from_config_value(None, {"base_dir": str(tmp_path)})
    assert isinstance(storage.event_log_storage, BatchingSqliteEventLogStorage)


def test_the_dagster_internals_the_storage_relies_on_are_unchanged():
    """orchestration/storage.py is the one user of Dagster internals: this fails, naming each
    one, when an upgrade of dagster renames them, changes their parameters, or changes the
    stock single-event write the batched path reproduces."""
    problems = internals_problems()
    assert not problems, (
        "orchestration/storage.py relies on Dagster internals that changed: "
        + "; ".join(problems)
        + ". Re-read the stock methods, adjust BatchingSqliteEventLogStorage._store_segment, "
        "re-run this file, then update TESTED_DAGSTER, INTERNALS, MIRRORED and the dagster "
        "pins in pyproject.toml (or take the storage: section out of dagster.yaml meanwhile)"
    )
    pins = {
        line.strip().strip('",').split("==")[0]: line.strip().strip('",').split("==")[1]
        for line in (REPO_ROOT / "pyproject.toml").read_text().splitlines()
        if line.strip().startswith('"dagster') and "==" in line
    }
    assert pins["dagster"] == TESTED_DAGSTER == package_version("dagster")
    assert set(pins) >= {"dagster", "dagster-webserver", "dagster-dbt"}
    for name, pinned in pins.items():
        assert package_version(name) == pinned, name


def test_no_other_module_uses_dagster_internals():
    """storage.py (and this file, its guard) alone: no other module of the project or test
    imports a private Dagster module or names one for importing."""
    import ast

    allowed = {REPO_ROOT / "orchestration" / "storage.py", REPO_ROOT / "tests" / "test_storage.py"}
    found = []
    for path in sorted([*REPO_ROOT.glob("orchestration/**/*.py"), *REPO_ROOT.glob("tests/*.py")]):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in {
                "import_module",
                "__import__",
            }:
                names = [a.value for a in node.args if isinstance(a, ast.Constant)]
            else:
                continue
            found += [
                f"{path.relative_to(REPO_ROOT)}:{node.lineno} {name}"
                for name in names
                if isinstance(name, str) and name.startswith("dagster._")
            ]
    assert found == [], (
        "Dagster internals outside orchestration/storage.py: "
        + "; ".join(found)
        + ". Use Dagster's public API (the names `from dagster import ...` offers) instead"
    )


def test_a_changed_internal_is_named(monkeypatch):
    name = next(iter(storage_module.MIRRORED))
    monkeypatch.setitem(storage_module.MIRRORED, name, "0" * 64)
    monkeypatch.setitem(storage_module.INTERNALS, "dagster._core.no_such_module:Thing", None)
    assert internals_problems() == [
        "dagster._core.no_such_module:Thing no longer exists",
        f"{name} changed (its source hash is {storage_module.source_hash(name)[:12]}, not "
        "000000000000)",
    ]
