"""run_worker_watchdog: fail a run whose worker process died without reporting its end.

A run worker killed by SIGKILL, the OOM killer or a node restart cannot report its own end. If
the code server that started it is alive, that server notices at once and fails the run. If
the code server died with it, nothing is left to tell the instance: Dagster's run monitoring
(``run_monitoring:`` in ``dagster.yaml``) fails such a run only when the run launcher has a
health check, and ``DefaultRunLauncher`` has none, so the run stayed STARTED forever and kept
its ``tokenbill_warehouse`` pool slot.

This sensor is that check, on Dagster's public API only. Each evaluation lists the STARTED
runs, reads the pid each run worker reported in its run's log ("Started process for run
(pid: N)"), asks the operating system whether that process is still alive (a pid reused by a
later process does not count: its start time is after the report) and fails the dead ones with
``instance.report_run_failed`` and a one-line message naming the run, the pid and what to do.
Run monitoring stays on for the rest (start and cancel timeouts, freeing the pool slots of
ended runs).

Which runs it checks ("this host"). A sensor is evaluated by the code server of its code
location, and ``DefaultRunLauncher`` starts each run worker as a child process of a code server
of the run's code location: so the workers it can see are those of code servers on the same
machine as the one evaluating it. A run is checked when ``DagsterRun.remote_job_origin`` (a
documented field of the run; None for ``execute_in_process`` runs, which no code server
started, and are not checked) names a code location that is

- started by the deployment itself (a ``python_module`` / ``python_file`` workspace entry, as
  ``workspace.yaml``): Dagster starts such a code server on the host of the process that
  launches the runs; the daemon, which evaluates this sensor, launches every queued run
  (``run_queue:``), and the webserver and the daemon of a deployment with such entries run on
  one host (``dagster dev``, ``make ui``);
- or a ``grpc_server`` workspace entry on a unix socket, ``localhost``, ``127.0.0.1``, ``::1``
  or this machine's host name.

A run of a code server on another machine is not checked (bound such runs with
``max_runtime_seconds`` under ``run_monitoring``): this is what the previous run-launcher
health check did. The sensor does nothing at all unless the instance's run launcher is
Dagster's default one without a health check of its own (a launcher with one, e.g. a
container launcher, is checked by run monitoring itself).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultRunLauncher,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from orchestration.settings import operations_setting

WATCHDOG_INTERVAL_SECONDS = operations_setting("TOKENBILL_RUN_WATCHDOG_SECONDS")
#: Hosts of a code server that runs on this machine.
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
#: Engine events in which the run worker reports its pid.
WORKER_PID_MESSAGES = ("Started process for run", "Executing steps in process")
#: Clock ticks per second, for /proc/<pid>/stat's start time.
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def watchdog_applies(instance: DagsterInstance) -> bool:
    """Whether the instance's run workers are this sensor's to check: Dagster's default run
    launcher, which has no health check of its own."""
    launcher = instance.run_launcher
    return isinstance(launcher, DefaultRunLauncher) and not (
        launcher.supports_check_run_worker_health
    )


def runs_on_this_host(run: DagsterRun) -> bool:
    """Whether the run's worker was started by a code server on this machine (module
    docstring: "Which runs it checks")."""
    origin = run.remote_job_origin
    if origin is None:
        return False  # not launched through a code server: e.g. execute_in_process
    location = origin.repository_origin.code_location_origin
    host = getattr(location, "host", None)
    if host is None:
        return True  # a code server the deployment starts itself, on its own host
    return bool(getattr(location, "socket", None)) or host in LOCAL_HOSTS


def worker_start(instance: DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """(pid, timestamp) of the run worker's latest report of its pid: "Started process for
    run (pid: N)" from the code server's child, or the in-process executor's "Executing steps
    in process (pid: N)"."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False, limit=1000
    ).records
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        data = event.engine_event_data if event else None
        pid = data.metadata.get("pid") if data else None
        message = (event.message if event else None) or entry.user_message or ""
        if pid is not None and message.startswith(WORKER_PID_MESSAGES):
            return int(pid.value), entry.timestamp
    return None


def worker_alive(pid: int, reported_at: float) -> bool:
    """Whether ``pid`` is a live (not zombie) process that existed when its start was reported
    (a process started later reuses a dead worker's pid)."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.parent.exists():
        if not Path("/proc").is_dir():  # no procfs: a bare existence check
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return False
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state, start_ticks = fields[0], int(fields[19])
    if state in {"Z", "X"}:
        return False
    started_at = _boot_time() + start_ticks / _CLK_TCK
    return started_at <= reported_at + 5  # /proc's clock and the event's differ slightly


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def dead_worker_message(run: DagsterRun, pid: int) -> str:
    return (
        f"Run {run.run_id} of {run.job_name}: its run worker process (pid {pid}) is gone: it "
        "was killed or crashed (e.g. SIGKILL, out of memory, node restart) without reporting "
        "an outcome; marked FAILURE by run_worker_watchdog. Its window is replaced by the next "
        "scheduled run or the nightly re-close; to replace it now, re-run its partitions."
    )


def fail_if_worker_dead(instance: DagsterInstance, run: DagsterRun) -> str | None:
    """Fail ``run`` (STARTED) if the worker it reported is gone; the failure message, or None
    when the worker is alive, has not reported its pid yet (the start timeout covers a worker
    that never does), or the run ended meanwhile."""
    started = worker_start(instance, run.run_id)
    if started is None:
        return None
    pid, reported_at = started
    if worker_alive(pid, reported_at):
        return None
    # The worker may have reported its end (or its code server the worker's death) meanwhile.
    current = instance.get_run_by_id(run.run_id)
    if current is None or current.status != DagsterRunStatus.STARTED:
        return None
    message = dead_worker_message(current, pid)
    instance.report_run_failed(current, message=message)
    return message


def check_run_workers(instance: DagsterInstance) -> str:
    """Fail every STARTED run of this host whose worker is gone; what was done, in a line."""
    if not watchdog_applies(instance):
        return (
            f"the run launcher ({type(instance.run_launcher).__name__}) is not Dagster's "
            "default one: run monitoring checks its workers"
        )
    records = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    local = [r.dagster_run for r in records if runs_on_this_host(r.dagster_run)]
    failed = [m for run in local if (m := fail_if_worker_dead(instance, run))]
    if failed:
        return f"failed {len(failed)} run(s) whose worker is gone: " + " | ".join(failed)
    return (
        f"{len(records)} run(s) started, {len(local)} with a worker on this host: every worker "
        "checked is alive"
    )


@sensor(
    name="run_worker_watchdog",
    minimum_interval_seconds=WATCHDOG_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        f"Every {WATCHDOG_INTERVAL_SECONDS} s (TOKENBILL_RUN_WATCHDOG_SECONDS): fail each "
        "started run whose run worker process on this host is gone (killed with its code "
        "server: SIGKILL, out of memory, node restart), so its pool slot is freed and the next "
        "run proceeds. Launches nothing. Running by default: without it such a run stays "
        "STARTED and blocks the tokenbill_warehouse pool."
    ),
)
def run_worker_watchdog(context: SensorEvaluationContext):
    return SkipReason(check_run_workers(context.instance))


sensors = [run_worker_watchdog]
