"""``make demo`` launches its month so that the UI lists it under *Backfills*.

The demo (``orchestration.demo.main``, as ``make demo`` runs it, on a small month) starts a
real ``dagster-webserver`` and ``dagster-daemon`` and launches one asset backfill per grain
over GraphQL; afterwards a webserver on the same instance (what ``make ui`` shows) answers
``partitionBackfillsOrError`` with the three backfills, completed, covering the month's 744
hours, 31 days and 1 month in one ranged run each; a backfill whose run fails fails the demo
in one line. The warehouse it leaves has the fingerprint of the same month run in process
(``--in-process``).

The demo writes under ``.tokenbill/``: here its state directory, exports and environment file
are pointed at ``tmp_path`` so that the repository's own demo state is left alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from orchestration import demo
from orchestration.dagster_services import DagsterServices
from orchestration.environment import write_env_file

pytestmark = pytest.mark.slow

MONTH = "2026-10"
EVENTS = "300"
FINGERPRINT = re.compile(r"fingerprint of the tables: ([0-9a-f]{16})")

BACKFILLS_QUERY = """
query {
  partitionBackfillsOrError(limit: 20) {
    __typename
    ... on PartitionBackfills {
      results {
        id
        status
        title
        isAssetBackfill
        numPartitions
        assetSelection { path }
        runs { runId status tags { key value } }
      }
    }
    ... on PythonError { message }
  }
}
"""

#: Per grain (in launch order): partitions and the one run's range.
EXPECTED = {
    "hourly_usage_job": (744, "2026-10-01-00:00", "2026-10-31-23:00"),
    "daily_usage_job": (31, "2026-10-01", "2026-10-31"),
    "monthly_usage_job": (1, "2026-10-01", "2026-10-01"),
}


def _run_demo(tmp_path: Path, name: str, monkeypatch, capsys, *extra: str) -> str:
    """``make demo ARGS="--events 300 ..."`` with its state under ``tmp_path/name``; stdout."""
    state = tmp_path / name
    # Everything the demo sets in os.environ is restored after the test (monkeypatch).
    for key in ("AWS_ENDPOINT_URL_S3", "TOKENBILL_FIRST_PARTITION"):
        monkeypatch.setenv(key, os.environ.get(key, ""))
    monkeypatch.setenv("DAGSTER_HOME", str(state / "dagster_home"))
    monkeypatch.setenv("TOKENBILL_WAREHOUSE_PATH", str(state / "warehouse.duckdb"))
    monkeypatch.setenv("TOKENBILL_ANALYST_DIR", str(state / "analyst"))
    monkeypatch.setattr(demo, "STATE_DIR", state)
    monkeypatch.setattr(demo, "EXPORTS_DIR", state / "exports")
    monkeypatch.setattr(demo, "write_env_file", lambda by: write_env_file(by, state / "env"))
    monkeypatch.setattr(demo, "demo_s3_port", lambda: None)  # any free port
    capsys.readouterr()
    assert demo.main(["--month", MONTH, "--events", EVENTS, *extra]) == 0
    out = capsys.readouterr().out
    with capsys.disabled():  # shown with -s
        print(out)
    return out


def test_the_demo_month_is_listed_under_backfills_and_matches_the_in_process_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, s3_endpoint
):
    out = _run_demo(tmp_path, "backfills", monkeypatch, capsys)
    # The run lines and the progress lines are echoed as the in-process path does.
    assert re.search(r"run [0-9a-f]{8} catalog_job +\(unpartitioned\) +succeeded", out), out
    for job, (_, first, last) in EXPECTED.items():
        assert re.search(rf"run [0-9a-f]{{8}} {job} +{first}\.\.{last} +succeeded", out), out
    assert "    ingestion: 744/744 hours landed" in out
    assert re.search(r"    dbt: \d+ of \d+ nodes done", out)

    # What `make ui` shows afterwards: a webserver (and a daemon, for the failure below) on
    # the demo's instance, its bucket replaced by one that does not exist.
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "TOKENBILL_S3_BUCKET": "tb-demo-no-such-bucket",
    }
    services = DagsterServices(env, tmp_path / "ui-logs")
    services.start()
    try:
        with services.logs_on_failure():
            services.wait_until_ready(180)
            data = services.graphql(BACKFILLS_QUERY)["partitionBackfillsOrError"]
            # A backfill whose run fails (its hours cannot be listed) fails the demo in one
            # line naming the run, its first error and where to read the rest.
            with pytest.raises(demo.DemoFailed) as failed:
                demo._backfill_grain(
                    services, MONTH, "hourly_usage_job", "2026-10-05-00:00", "2026-10-05-01:00"
                )
    finally:
        services.stop()
    message = str(failed.value)
    assert "\n" not in message, message
    assert re.match(r"run [0-9a-f-]{36} of backfill \w+ ended FAILURE: ", message), message
    assert "tb-demo-no-such-bucket" in message, message
    assert message.endswith("demo-runs.log)"), message
    assert data["__typename"] == "PartitionBackfills", data
    backfills = sorted(data["results"], key=lambda b: b["title"])
    assert [b["title"] for b in backfills] == [
        f"tokenbill demo {MONTH}: {job}" for job in sorted(EXPECTED)
    ]
    for backfill in backfills:
        job = backfill["title"].rsplit(": ", 1)[1]
        partitions, first, last = EXPECTED[job]
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
        assert backfill["isAssetBackfill"] and backfill["numPartitions"] == partitions, backfill
        (run,) = backfill["runs"]  # one ranged run: single-run backfill policies
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert run["status"] == "SUCCESS"
        assert tags["dagster/backfill"] == backfill["id"]
        assert (
            tags["dagster/asset_partition_range_start"],
            tags["dagster/asset_partition_range_end"],
        ) == (first, last)
    hourly = next(b for b in backfills if b["title"].endswith("hourly_usage_job"))
    assert ["raw_usage_events"] in [a["path"] for a in hourly["assetSelection"]]

    in_process = _run_demo(tmp_path, "in-process", monkeypatch, capsys, "--in-process")
    assert FINGERPRINT.search(out)[1] == FINGERPRINT.search(in_process)[1]
