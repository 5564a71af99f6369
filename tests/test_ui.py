"""The deployment a human uses, end to end: ``dagster-webserver`` + ``dagster-daemon`` on
``workspace.yaml``, driven over GraphQL like the UI does, then looked at in headless Chromium.

One scenario on the hand-made data set (``pipeline_data.py``) in a real S3 server (moto):

1. the code location serves every asset, asset check, job, schedule and sensor of ``defs``;
2. ``catalog_job`` launched with ``launchRun`` succeeds (the daemon dequeues it); a one-hour
   ``hourly_usage_job`` run launched beside the backfill below succeeds too (queued, not
   failing on DuckDB's lock);
3. a ``launchPartitionBackfill`` of the hourly assets over 2026-10-05..06 is run by the daemon as
   ONE run (single-run backfill policy) and lands the exact hourly totals in the warehouse;
4. the asset graph page renders (screenshot in ``.tokenbill/ui-test/asset_graph.png``).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import boto3
import duckdb
import pytest
from dagster import AssetKey, PartitionKeyRange

from orchestration.dagster_services import (
    TERMINAL_BACKFILL_STATUSES,
    get_backfill,
    launch_asset_backfill,
)
from orchestration.definitions import defs
from tests import pipeline_data as data
from tests.ui_support import (
    LOCATION,
    REPO_ROOT,
    REPO_SELECTOR,
    REPOSITORY,
    DagsterServices,
    copy_for_humans,
    dump_dom,
    failure_summary,
    launch_run,
    prepare_instance,
    screenshot,
    wait_for,
    wait_for_run,
)

# Real webserver, daemon and code servers, runs and a browser: minutes each.
pytestmark = pytest.mark.slow

FIRST_HOUR, LAST_HOUR = "2026-10-05-00:00", "2026-10-06-23:00"
HOURLY_JOB = "hourly_usage_job"
CATALOG_JOB = "catalog_job"
SCREENSHOT_COPY = REPO_ROOT / ".tokenbill" / "ui-test" / "asset_graph.png"
# Generous bounds: the whole test took ~3.6 minutes on a busy 2-core machine (load 4-5).
READY_TIMEOUT = 90
CATALOG_RUN_TIMEOUT = 240
BACKFILL_TIMEOUT = 360
# make ui: dbt parse, a generated month, then dagster dev's webserver, daemon and code servers.
MAKE_UI_TIMEOUT = 300


@pytest.fixture
def dagster_ui(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[DagsterServices, Path]]:
    """Webserver + daemon on a fresh instance, warehouse and bucket; stopped on teardown."""
    bucket = f"tb-ui-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    data.upload(client, bucket)

    home = prepare_instance(tmp_path / "dagster_home")
    warehouse = tmp_path / "warehouse.duckdb"
    env = {
        **os.environ,  # PATH etc., and the AWS_* variables the s3_endpoint fixture set
        "TOKENBILL_S3_BUCKET": bucket,
        "TOKENBILL_S3_PREFIX": data.PREFIX,
        "TOKENBILL_WAREHOUSE_PATH": str(warehouse),
        "TOKENBILL_CATALOG_DIR": str(REPO_ROOT / "tests" / "fixtures" / "catalog_e2e"),
        "TOKENBILL_FIRST_PARTITION": "2026-10-01",
        "DAGSTER_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    services = DagsterServices(env, tmp_path / "logs")
    services.start()
    try:
        with services.logs_on_failure():
            services.wait_until_ready(READY_TIMEOUT)
        yield services, warehouse
    finally:
        services.stop()


def test_make_ui_from_a_bare_shell_loads_the_code_location(tmp_path: Path):
    """``make ui`` as an operator types it in a fresh shell: no venv on PATH (``env -i
    PATH=/usr/bin:/bin HOME=$HOME make ui``). ``dagster dev`` starts, and the code location
    loads without error (it used to fail: "The dbt executable 'dbt' was not found on PATH")."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        # A throwaway instance and warehouse instead of the repository's .tokenbill/.
        "DAGSTER_HOME": str(prepare_instance(tmp_path / "dagster_home")),
        "TOKENBILL_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
    }
    services = DagsterServices(env, tmp_path / "logs")
    services.start_make_ui(events=2000)
    try:
        with services.logs_on_failure():
            services.wait_until_ready(MAKE_UI_TIMEOUT)  # LOADED, and not a PythonError
            assert_code_location_matches_defs(services)
    finally:
        services.stop()


def test_ui_serves_the_code_location_runs_a_backfill_and_renders_the_asset_graph(
    dagster_ui, tmp_path: Path
):
    services, warehouse = dagster_ui
    timings: dict[str, float] = {}
    started = time.monotonic()
    with services.logs_on_failure():
        assert_code_location_matches_defs(services)
        timings["code location"] = time.monotonic() - started

        run_id = launch_run(services, CATALOG_JOB)
        run = wait_for_run(services, run_id, CATALOG_RUN_TIMEOUT)
        assert run["status"] == "SUCCESS", failure_summary(services, run_id)
        timings["catalog_job"] = time.monotonic() - started

        # A scheduled-style run of one hour launched while the backfill runs: DuckDB allows one
        # writer, so the instance's pool (limit 1) must queue their steps, not fail on the lock.
        concurrent_id = launch_run(
            services, "hourly_usage_job", tags={"dagster/partition": "2026-10-05-07:00"}
        )
        backfill = backfill_hourly_assets(services)
        timings["backfill"] = time.monotonic() - started
        concurrent = wait_for_run(services, concurrent_id, CATALOG_RUN_TIMEOUT)
        assert concurrent["status"] == "SUCCESS", failure_summary(services, concurrent_id)
        assert_hourly_marts_landed(services, warehouse)

        png = render_asset_graph(services, tmp_path)
        timings["screenshot"] = time.monotonic() - started
    print(
        f"backfill {backfill['id']}: run {backfill['runs'][0]['runId']}; screenshot {png} "
        f"(copy: {SCREENSHOT_COPY}); elapsed: "
        + ", ".join(f"{k} done at {v:.0f}s" for k, v in timings.items())
    )


# -- 1. the code location ------------------------------------------------------------------

REPOSITORY_QUERY = """
query Repository($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on PythonError { message stack }
    ... on RepositoryNotFoundError { message }
    ... on Repository {
      jobs { name }
      schedules { name }
      sensors { name }
      assetNodes {
        assetKey { path }
        assetChecksOrError {
          __typename
          ... on AssetChecks { checks { name } }
        }
      }
    }
  }
}
"""


def assert_code_location_matches_defs(services: DagsterServices) -> None:
    repo_def = defs.get_repository_def()
    asset_graph = repo_def.asset_graph
    expected = {
        "assets": {key.to_user_string() for key in asset_graph.get_all_asset_keys()},
        "checks": {(c.asset_key.to_user_string(), c.name) for c in asset_graph.asset_check_keys},
        "jobs": {job.name for job in repo_def.get_all_jobs()},
        "schedules": {s.name for s in repo_def.schedule_defs},
        "sensors": {s.name for s in repo_def.sensor_defs},
    }
    repo = services.graphql(REPOSITORY_QUERY, {"selector": REPO_SELECTOR})["repositoryOrError"]
    assert repo["__typename"] == "Repository", repo
    checks_by_asset = {}
    for node in repo["assetNodes"]:
        assert node["assetChecksOrError"]["__typename"] == "AssetChecks", node
        key = AssetKey(node["assetKey"]["path"]).to_user_string()
        checks_by_asset[key] = [c["name"] for c in node["assetChecksOrError"]["checks"]]
    served = {
        "assets": set(checks_by_asset),
        "checks": {(key, name) for key, names in checks_by_asset.items() for name in names},
        "jobs": {job["name"] for job in repo["jobs"]},
        "schedules": {s["name"] for s in repo["schedules"]},
        "sensors": {s["name"] for s in repo["sensors"]},
    }
    for kind in ("assets", "checks", "jobs", "schedules"):
        assert served[kind] == expected[kind], kind
    # Dagster may add its own sensors (e.g. the default automation-condition sensor).
    assert expected["sensors"] <= served["sensors"]

    # A few that the README documents, so an empty `defs` cannot pass the comparison above.
    assert {
        "raw_usage_events",
        "marts/fct_token_usage_hourly",
        "marts/fct_token_usage_daily",
        "marts/fct_token_usage_monthly",
        "catalog/prices",
    } <= served["assets"]
    assert {
        ("raw_usage_events", "lines_reconcile"),
        ("raw_usage_events", "quarantine_rate"),
        ("marts/fct_token_usage_daily", "daily_reconciles_with_hourly"),
        ("marts/fct_unpriced_usage", "all_usage_is_priced"),
    } <= served["checks"]
    assert {CATALOG_JOB, HOURLY_JOB, "daily_usage_job", "monthly_usage_job"} <= served["jobs"]


# -- 2. a run: catalog_job -----------------------------------------------------------------

# -- 3. a partition-range backfill of the hourly assets --------------------------------------

PARTITION_STATS = """
query PartitionStats($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    partitionStats { numMaterialized numFailed numMaterializing }
    assetChecksOrError {
      ... on AssetChecks { checks { name executionForLatestMaterialization { status } } }
    }
  }
}
"""


def hourly_job_assets_and_partitions() -> tuple[set[AssetKey], list[str]]:
    job = defs.get_repository_def().get_job(HOURLY_JOB)
    # The partitioned assets; the unpartitioned analyst_snapshot would be a second run.
    keys = set(job.asset_layer.selected_asset_keys) - {AssetKey("analyst_snapshot")}
    partitions = job.partitions_def.get_partition_keys_in_range(
        PartitionKeyRange(FIRST_HOUR, LAST_HOUR)
    )
    return keys, list(partitions)


def backfill_hourly_assets(services: DagsterServices) -> dict:
    """The UI's "Materialize" on the hourly job's assets with a partition range, i.e. an asset
    backfill: the daemon turns it into runs, one for the whole range (single-run policy)."""
    keys, partitions = hourly_job_assets_and_partitions()
    assert len(partitions) == 48
    assert AssetKey("raw_usage_events") in keys
    backfill_id = launch_asset_backfill(
        services,
        [key.path for key in sorted(keys)],
        partitions,
        title="test_ui: hourly assets, 2026-10-05..06",
    )

    def finished():
        services.assert_alive()
        backfill = get_backfill(services, backfill_id)
        return backfill if backfill["status"] in TERMINAL_BACKFILL_STATUSES else None

    backfill = wait_for(f"backfill {backfill_id} to complete", finished, BACKFILL_TIMEOUT, 2)
    runs = backfill["runs"]
    failed = [failure_summary(services, r["runId"]) for r in runs if r["status"] != "SUCCESS"]
    assert backfill["status"] in {"COMPLETED_SUCCESS", "COMPLETED"}, (backfill, failed)
    assert backfill["isAssetBackfill"] and backfill["numPartitions"] == 48, backfill

    # Single-run backfill policy: the whole range and every selected asset in ONE run.
    assert len(runs) == 1, runs
    (run,) = runs
    assert run["status"] == "SUCCESS", failure_summary(services, run["runId"])
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/backfill"] == backfill_id
    assert tags["dagster/asset_partition_range_start"] == FIRST_HOUR
    assert tags["dagster/asset_partition_range_end"] == LAST_HOUR
    assert {AssetKey(a["path"]) for a in run["assetSelection"]} == keys
    return backfill


def assert_hourly_marts_landed(services: DagsterServices, warehouse: Path) -> None:
    """The UI's view (partitions, checks) and the warehouse's rows agree with the data set."""
    keys = [{"path": ["raw_usage_events"]}, {"path": ["marts", "fct_token_usage_hourly"]}]
    nodes = services.graphql(PARTITION_STATS, {"keys": keys})["assetNodes"]
    assert len(nodes) == 2, nodes
    for node in nodes:
        assert node["partitionStats"] == {
            "numMaterialized": 48,
            "numFailed": 0,
            "numMaterializing": 0,
        }, node
    checks = {
        check["name"]: check["executionForLatestMaterialization"]["status"]
        for node in nodes
        if node["assetKey"]["path"] == ["raw_usage_events"]
        for check in node["assetChecksOrError"]["checks"]
    }
    # 4 of 13 lines quarantined: above the 1% warn rate, so quarantine_rate (WARN) fails.
    # No cancelled stream without usage among them: unreported_usage (WARN) passes.
    assert checks == {
        "lines_reconcile": "SUCCEEDED",
        "quarantine_rate": "FAILED",
        "unreported_usage": "SUCCEEDED",
    }

    with duckdb.connect(str(warehouse), read_only=True) as con:
        # Hourly totals: cus_a 8360 + cus_b 1100 tokens in 6 rows (test_pipeline_e2e.py).
        assert con.sql(
            "select count(*), sum(total_tokens), sum(event_count) from marts.fct_token_usage_hourly"
        ).fetchall() == [(6, 8360 + 1100, 8)]
        assert con.sql(
            "select count(*), sum(lines_read), sum(valid_count), sum(duplicate_count), "
            "sum(quarantined_count) from raw.ingestion_audit"
        ).fetchall() == [(48, 13, 8, 1, 4)]
        # The catalog loaded by catalog_job prices all of it (nothing unpriced).
        assert con.sql("select count(*) from marts.fct_unpriced_usage").fetchall() == [(0,)]
        assert con.sql("select count(*) from marts.fct_rated_charges_hourly").fetchall() == [(15,)]


# -- 4. the asset graph in a browser ---------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def graph_url(services: DagsterServices) -> str:
    """The global asset lineage with the ingestion -> staging -> token-usage groups expanded
    (the others stay collapsed, so the graph fits the window at a readable zoom)."""
    asset_graph = defs.get_repository_def().asset_graph
    hourly_mart = AssetKey(["marts", "fct_token_usage_hourly"])
    shown = {AssetKey("raw_usage_events"), hourly_mart, *asset_graph.get(hourly_mart).parent_keys}
    groups = sorted({asset_graph.get(key).group_name for key in shown})
    # The UI's group ids: "global@global:<group>", or per code location behind a feature flag.
    expanded = [
        group_id
        for group in groups
        for group_id in (f"global@global:{group}", f"{REPOSITORY}@{LOCATION}:{group}")
    ]
    return f"{services.url}/asset-groups?expanded={quote(','.join(expanded), safe=',')}"


def render_asset_graph(services: DagsterServices, tmp_path: Path) -> Path:
    # What "Skip" on the first-visit "Join the Dagster community" dialog does; otherwise the
    # dialog covers the graph.
    assert services.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
    url = graph_url(services)

    dom = dump_dom(url, tmp_path / "chromium-dom")
    assert "Global asset lineage" in dom, dom[-3000:]
    assert "raw_usage_events" in dom, dom[-3000:]

    png = screenshot(url, tmp_path / "asset_graph.png", tmp_path / "chromium-profile")
    copy_for_humans(png, SCREENSHOT_COPY)
    content = png.read_bytes()
    assert content.startswith(PNG_SIGNATURE), content[:16]
    width, height = int.from_bytes(content[16:20], "big"), int.from_bytes(content[20:24], "big")
    assert (width, height) == (1600, 1000)
    # A blank or error page compresses to a few KB; the rendered graph is 100+ KB.
    assert len(content) > 20_000, f"{png} is only {len(content)} bytes"
    return png
