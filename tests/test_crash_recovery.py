"""A run whose worker is killed (SIGKILL) recovers without an operator.

A real ``dagster-webserver`` + ``dagster-daemon`` (run monitoring on, with short intervals) on
the hand-made data set in a real S3 server; runs are launched over GraphQL and executed by the
run workers the daemon's code server starts. Each test:

1. launches an ``hourly_usage_job`` run over 2026-10-05..06 and waits for it to reach the step
   to interrupt (ingestion, or the dbt build);
2. launches the next run of the same range (what the nightly re-close would start), which
   waits behind the first for the ``tokenbill_warehouse`` pool's one slot;
3. SIGKILLs the first run's worker (found by its run id: the pid it reported), and asserts
   that none of the worker's child processes (dbt, compute-log tails) survives it;
4. waits, doing nothing: monitoring marks the killed run FAILURE and frees its pool slot, and
   the waiting run then succeeds;
5. the warehouse's tables are identical to those of a clean run of the same range.

During ingestion the worker is killed while it reads S3 (a proxy holds S3's traffic, so the
moment is certain) and its code server is left alone: the code server sees its child die. In
the dbt build the code server is killed first and the worker with it, as a node restart or the
OOM killer would: nothing is left to report the run, and only the ``run_worker_watchdog``
sensor (``orchestration/defs/operations/watchdog.py``) can fail it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import duckdb
import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultRunLauncher,
    RunsFilter,
    build_sensor_context,
)

from orchestration.definitions import build_defs
from orchestration.defs.operations.watchdog import (
    check_run_workers,
    fail_if_worker_dead,
    run_worker_watchdog,
    runs_on_this_host,
    watchdog_applies,
    worker_alive,
    worker_start,
)
from orchestration.defs.resources import WAREHOUSE_POOL
from orchestration.runner import CATALOG_JOB, run_job_range
from tests import pipeline_data as data
from tests.ui_support import (
    REPO_ROOT,
    DagsterServices,
    GateProxy,
    alive,
    descendants,
    failure_summary,
    get_run,
    launch_run,
    parent_pid,
    prepare_instance,
    wait_for,
    wait_for_run,
)

DBT_TARGET = REPO_ROOT / "dbt_project" / "target" / "dagster"
CATALOG_DIR = REPO_ROOT / "tests" / "fixtures" / "catalog_e2e"
HOURLY_JOB = "hourly_usage_job"
FIRST_HOUR, LAST_HOUR = "2026-10-05-00:00", "2026-10-06-23:00"
RANGE_TAGS = {
    "dagster/asset_partition_range_start": FIRST_HOUR,
    "dagster/asset_partition_range_end": LAST_HOUR,
}
#: The hourly job's tables (ingestion's and the hourly dbt models').
TABLES = (
    "raw.usage_events",
    "raw.usage_event_duplicates",
    "raw.usage_event_quarantine",
    "raw.ingested_objects",
    "raw.ingestion_audit",
    "marts.fct_token_usage_hourly",
    "marts.fct_rated_charges_hourly",
    "marts.fct_unpriced_usage",
)
#: Short intervals for the test; the shipped ones are in orchestration/dagster.yaml.
MONITORING = {"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 1}
# Generous bounds for a busy 2-core machine; none is asserted as a duration.
READY_TIMEOUT = 120
RUN_TIMEOUT = 300
DETECT_TIMEOUT = 120


class Deployment:
    """Webserver + daemon on one instance, warehouse and bucket, S3 behind a gate proxy."""

    def __init__(self, services: DagsterServices, home: Path, warehouse: Path, proxy):
        self.services, self.home, self.warehouse, self.proxy = services, home, warehouse, proxy
        self.instance = DagsterInstance.from_config(str(home))

    def worker_pid(self, run_id: str) -> int | None:
        """The pid the run's worker reported, as the watchdog reads it."""
        found = worker_start(self.instance, run_id)
        return found[0] if found else None

    def step_started(self, run_id: str, step_prefix: str) -> bool:
        return any(
            (r.dagster_event.step_key or "").startswith(step_prefix)
            for r in self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
        )

    def messages(self, run_id: str) -> list[str]:
        """Each event's text: the logged message, or the event's own (an event reported by
        the daemon, e.g. a run failure, has no logged message)."""
        return [
            r.user_message or (r.dagster_event.message if r.dagster_event else "") or ""
            for r in self.instance.all_logs(run_id)
        ]

    def slots_held_by(self, run_id: str) -> list[str]:
        info = self.instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
        return [slot.step_key for slot in info.claimed_slots if slot.run_id == run_id]

    def tables(self) -> dict[str, list[tuple]]:
        return snapshot(str(self.warehouse))


def snapshot(warehouse: str) -> dict[str, list[tuple]]:
    with duckdb.connect(warehouse, read_only=True) as con:
        return {t: con.sql(f"select * from {t} order by all").fetchall() for t in TABLES}


@pytest.fixture(scope="module")
def clean_tables(tmp_path_factory, s3_endpoint) -> dict[str, list[tuple]]:
    """The tables of a clean (never interrupted) run of the same range, in process."""
    root = tmp_path_factory.mktemp("clean")
    bucket = f"tb-clean-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    data.upload(client, bucket)
    warehouse = str(root / "warehouse.duckdb")
    defs = build_defs(bucket, data.PREFIX, warehouse, str(CATALOG_DIR))
    (root / "home").mkdir()
    with DagsterInstance.local_temp(str(root / "home")) as instance:
        for job, first, last in [(CATALOG_JOB, None, None), (HOURLY_JOB, FIRST_HOUR, LAST_HOUR)]:
            assert run_job_range(defs, job, first, last, instance, log_level="WARNING").success
    tables = snapshot(warehouse)
    assert len(tables["raw.ingestion_audit"]) == 48  # a real run, not an empty one
    return tables


@pytest.fixture
def deployment(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    bucket = f"tb-crash-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    data.upload(client, bucket)
    proxy = GateProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    home = prepare_instance(tmp_path / "dagster_home", run_monitoring=MONITORING)
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the project's storage needs it
    warehouse = tmp_path / "warehouse.duckdb"
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_S3": proxy.url,  # the runs read S3 through the gate
        "TOKENBILL_S3_BUCKET": bucket,
        "TOKENBILL_S3_PREFIX": data.PREFIX,
        "TOKENBILL_WAREHOUSE_PATH": str(warehouse),
        "TOKENBILL_CATALOG_DIR": str(CATALOG_DIR),
        "TOKENBILL_FIRST_PARTITION": "2026-10-01",
        "TOKENBILL_RUN_WATCHDOG_SECONDS": "1",  # the shipped default is 30
        "DAGSTER_HOME": str(home),
    }
    services = DagsterServices(env, tmp_path / "logs")
    services.start()
    try:
        with services.logs_on_failure():
            services.wait_until_ready(READY_TIMEOUT)
            deployment = Deployment(services, home, warehouse, proxy)
            catalog = wait_for_run(services, launch_run(services, CATALOG_JOB), RUN_TIMEOUT)
            assert catalog["status"] == "SUCCESS", failure_summary(services, catalog["runId"])
        yield deployment
        deployment.instance.dispose()
    finally:
        services.stop()
        proxy.stop()


@pytest.mark.slow
def test_a_run_killed_during_ingestion_is_failed_and_the_next_run_succeeds(
    deployment: Deployment, clean_tables
):
    d = deployment
    with d.services.logs_on_failure():
        d.proxy.close()  # S3 stalls: the run stays in its ingestion step
        killed = launch_run(d.services, HOURLY_JOB, tags=RANGE_TAGS)
        pid = wait_for(
            "the run to be in its ingestion step",
            lambda: d.step_started(killed, "raw_usage_events") and d.worker_pid(killed),
            RUN_TIMEOUT,
        )
        following = launch_run(d.services, HOURLY_JOB, tags=RANGE_TAGS)
        # The queue holds it back: the pool's one slot is the killed run's.
        wait_for(
            "the next run to be queued",
            lambda: get_run(d.services, following)["status"] in {"QUEUED", "STARTING", "STARTED"},
            RUN_TIMEOUT,
        )
        assert d.slots_held_by(killed) == ["raw_usage_events"]
        children = descendants(pid)

        os.kill(pid, signal.SIGKILL)
        d.proxy.open()

        assert_recovered(d, killed, pid, children, following, clean_tables)


@pytest.mark.slow
def test_a_run_killed_during_the_dbt_build_with_its_code_server_is_failed_and_the_next_run_succeeds(  # noqa: E501
    deployment: Deployment, clean_tables
):
    d = deployment
    with d.services.logs_on_failure():
        killed = launch_run(d.services, HOURLY_JOB, tags=RANGE_TAGS)
        # The first dbt node is done: dbt is writing the marts.
        wait_for(
            "the dbt build to be under way",
            lambda: any(m.startswith("dbt: 1 of ") for m in d.messages(killed)),
            RUN_TIMEOUT,
            every=0.2,
        )
        pid = d.worker_pid(killed)
        children = descendants(pid)
        dbt = [p for p, cmd in children.items() if "tokenbill-dbt" in cmd and " build" in cmd]
        assert len(dbt) == 1, children
        following = launch_run(d.services, HOURLY_JOB, tags=RANGE_TAGS)

        # The code server that started the worker first, then the worker: nothing is left to
        # tell the instance that the run ended.
        code_server = parent_pid(pid)
        assert code_server and "dagster" in Path(f"/proc/{code_server}/cmdline").read_text()
        os.kill(code_server, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)

        assert_recovered(d, killed, pid, children, following, clean_tables)
        # The failure names the dead worker: the watchdog ("is gone"), or the code server if it
        # saw its child die before it was killed itself.
        detected = [
            m
            for m in d.messages(killed)
            if "is gone: it was killed" in m
            or (f"Run execution process for {killed}" in m and "signal 9" in m)
        ]
        assert detected, d.messages(killed)[-10:]
        print(f"the killed run was failed by: {detected[0]}")


def assert_recovered(
    d: Deployment,
    killed: str,
    pid: int,
    children: dict[int, str],
    following: str,
    clean_tables: dict[str, list[tuple]],
) -> None:
    # Nothing the worker started outlives it (dbt dies with it, compute-log tails end).
    wait_for(
        "the killed worker's children to end",
        lambda: not alive(pid) and not [c for c in children if alive(c)],
        30,
        every=0.5,
    )

    run = wait_for(
        f"run {killed} to be marked failed",
        lambda: (r := get_run(d.services, killed))["status"] == "FAILURE" and r,
        DETECT_TIMEOUT,
    )
    assert run["status"] == "FAILURE"
    wait_for(f"the pool slot of {killed} to be freed", lambda: not d.slots_held_by(killed), 60)

    done = wait_for_run(d.services, following, RUN_TIMEOUT)
    assert done["status"] == "SUCCESS", failure_summary(d.services, following)
    assert not d.slots_held_by(following)
    # Its dbt build reported its progress, ending with every node dbt ran (the last dbt
    # invocation, whose run_results.json dagster-dbt leaves in the shared target path).
    results = json.loads((DBT_TARGET / "run_results.json").read_text())["results"]
    done_lines = [m for m in d.messages(following) if m.startswith("dbt: ")]
    assert done_lines[-1] == f"dbt: {len(results)} of {len(results)} nodes done", done_lines

    tables = d.tables()
    for table in TABLES:
        assert tables[table] == clean_tables[table], table
    # The data set's hourly totals (tests/test_pipeline_e2e.py): 8360 + 1100 tokens, 8 events.
    hourly = tables["marts.fct_token_usage_hourly"]
    assert len(hourly) == 6


def test_shipped_monitoring_settings_are_on_and_short_enough():
    """Production defaults: a dead worker is found within a minute and its slot freed soon
    after; a run that cannot start or cancel is failed after 3 minutes."""
    import yaml

    config = yaml.safe_load((REPO_ROOT / "orchestration" / "dagster.yaml").read_text())
    assert "run_launcher" not in config  # Dagster's default; run_worker_watchdog checks it
    assert config["run_monitoring"] == {
        "enabled": True,
        "poll_interval_seconds": 30,
        "start_timeout_seconds": 180,
        "cancel_timeout_seconds": 180,
        "max_resume_run_attempts": 0,
        "free_slots_after_run_end_seconds": 30,
    }
    assert config["run_queue"] == {
        "dequeue_interval_seconds": 1,  # the demo's backfill runs start without waiting
        "max_user_code_failure_retries": 5,
        "user_code_failure_retry_delay": 10,
    }


#: A run that stays in its one step: its worker is this script's process (an in-process run).
STUCK_RUN = """
import sys, time
from dagster import DagsterInstance, job, op

@op
def wait_forever():
    time.sleep(600)

@job
def stuck_job():
    wait_forever()

with DagsterInstance.from_config(sys.argv[1]) as instance:
    stuck_job.execute_in_process(instance=instance)
"""


class CheckingLauncher(DefaultRunLauncher):
    """A default launcher that says it checks its workers itself (as container launchers do)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True


@pytest.fixture
def instance_home(tmp_path: Path) -> Iterator[tuple[DagsterInstance, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance:
        yield instance, home


def start_stuck_run(instance: DagsterInstance, home: Path) -> tuple[subprocess.Popen, DagsterRun]:
    """A real run, STARTED, whose worker (a process of its own) is in its step."""
    worker = subprocess.Popen([sys.executable, "-c", STUCK_RUN, str(home)], cwd=REPO_ROOT)

    def started() -> DagsterRun | None:
        assert worker.poll() is None, f"the stuck run's process exited ({worker.returncode})"
        runs = instance.get_runs(RunsFilter(job_name="stuck_job"))
        if not runs or runs[0].status != DagsterRunStatus.STARTED:
            return None
        run = runs[0]
        in_step = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_START)
        reported = worker_start(instance, run.run_id)
        return run if in_step.records and reported and reported[0] == worker.pid else None

    return worker, wait_for("the stuck run to be in its step", started, RUN_TIMEOUT, every=0.2)


def test_the_watchdog_fails_a_run_whose_reported_worker_is_gone(instance_home):
    """The check the watchdog makes of each run of this host: the pid the worker logged,
    alive or not. A real run whose worker is SIGKILLed, through the public API only."""
    instance, home = instance_home
    worker, run = start_stuck_run(instance, home)
    try:
        assert fail_if_worker_dead(instance, run) is None  # alive: left alone
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    finally:
        worker.kill()
        worker.wait()

    message = fail_if_worker_dead(instance, run)
    assert message is not None
    assert message.startswith(
        f"Run {run.run_id} of stuck_job: its run worker process (pid {worker.pid}) is gone: it "
        "was killed or crashed (e.g. SIGKILL, out of memory, node restart) without reporting "
        "an outcome; marked FAILURE by run_worker_watchdog."
    )
    assert message.endswith("to replace it now, re-run its partitions.")
    assert "\n" not in message
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    failures = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.PIPELINE_FAILURE
    ).records
    assert [f.event_log_entry.dagster_event.message for f in failures] == [message]
    # An ended run is not failed twice.
    assert fail_if_worker_dead(instance, instance.get_run_by_id(run.run_id)) is None
    again = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.PIPELINE_FAILURE)
    assert len(again.records) == 1


def test_the_watchdog_leaves_runs_no_code_server_of_this_host_started(instance_home):
    """An in-process run (``execute_in_process``, ``runner.py``) may run on any machine: the
    sensor itself does not fail it, even with its worker gone."""
    instance, home = instance_home
    worker, run = start_stuck_run(instance, home)
    worker.kill()
    worker.wait()
    assert not runs_on_this_host(run)
    with build_sensor_context(instance=instance) as context:
        result = run_worker_watchdog(context)
    assert result.skip_message == (
        "1 run(s) started, 0 with a worker on this host: every worker checked is alive"
    )
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    assert check_run_workers(instance) == result.skip_message


def test_the_watchdog_checks_the_default_launcher_only(tmp_path: Path):
    """Dagster's default launcher (also under its earlier name TokenbillRunLauncher) has no
    worker check: the watchdog's. A launcher with a check of its own is run monitoring's."""
    cases = [
        (None, True),
        (("orchestration.run_launcher", "TokenbillRunLauncher"), True),
        ((__name__, "CheckingLauncher"), False),
    ]
    for i, (launcher, applies) in enumerate(cases):
        home = tmp_path / str(i)
        home.mkdir()
        overrides = (
            {"run_launcher": {"module": launcher[0], "class": launcher[1]}} if launcher else None
        )
        with DagsterInstance.local_temp(str(home), overrides=overrides) as instance:
            assert isinstance(instance.run_launcher, DefaultRunLauncher)
            assert watchdog_applies(instance) is applies, launcher
            if not applies:
                assert check_run_workers(instance) == (
                    "the run launcher (CheckingLauncher) is not Dagster's default one: run "
                    "monitoring checks its workers"
                )


def test_health_check_tells_a_live_worker_from_a_dead_one_and_a_reused_pid():
    me = os.getpid()
    assert worker_alive(me, time.time())
    # A process that started after the pid was reported is another process (pid reuse).
    assert not worker_alive(me, time.time() - 3600)
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    assert not worker_alive(child, time.time())
