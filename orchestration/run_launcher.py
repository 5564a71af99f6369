"""The instance's run launcher: Dagster's default one, plus a health check of the run worker.

Dagster's run monitoring (``run_monitoring:`` in ``dagster.yaml``, done by ``dagster-daemon``)
fails a run whose worker died only if the run launcher can tell that it died;
``DefaultRunLauncher`` cannot (its ``supports_check_run_worker_health`` is false), so a run
whose worker was killed together with its code server (the OOM killer, a node restart, a
restarted ``dagster dev``) stayed STARTED forever and kept its ``tokenbill_warehouse`` slot.

The default launcher starts each run worker as a child process of a local code server, which
records ``Started process for run (pid: N)`` in the run's event log. This launcher reads that
pid back and asks the operating system whether that process is still alive. It can only see
processes of its own host: for a code server elsewhere (a ``grpc_server`` workspace entry on
another machine) it answers "running" and leaves the run to ``max_runtime_seconds``.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher

# Not exported by Dagster: the types a run launcher's health check returns, and the run tag
# that says where its code server runs. Nothing else here is private. The second deliberate
# user of Dagster internals after orchestration/storage.py (a health check cannot be written
# without them): INTERNALS lists them and tests/test_storage.py fails, naming them, when an
# upgrade changes them.
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

#: The Dagster internals this module uses -> their parameters (None: only that they exist).
INTERNALS: dict[str, str | None] = {
    "dagster._core.launcher:CheckRunHealthResult": "status, msg, transient, run_worker_id",
    "dagster._core.launcher:WorkerStatus.RUNNING": None,
    "dagster._core.launcher:WorkerStatus.FAILED": None,
    "dagster._core.storage.tags:GRPC_INFO_TAG": None,
}

#: Hosts of a code server that runs on this machine (``dagster dev``, ``dagster-daemon`` and
#: ``dagster-webserver`` start theirs on localhost or a unix socket).
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
#: Engine events in which the run worker reports its pid.
WORKER_PID_MESSAGES = ("Started process for run", "Executing steps in process")
#: Clock ticks per second, for /proc/<pid>/stat's start time.
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class TokenbillRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose run workers the monitoring daemon can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if not _runs_on_this_host(run):
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, "the run worker is on another host; not checked"
            )
        started = worker_start(self._instance, run.run_id)
        if started is None:
            # Launched but the worker has not reported its pid yet: the start timeout covers it.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid reported yet")
        pid, reported_at = started
        if worker_alive(pid, reported_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run worker process (pid {pid}) is gone: it was killed or crashed "
            "(e.g. SIGKILL, out of memory, node restart) without reporting an outcome",
            run_worker_id=str(pid),
        )


def _runs_on_this_host(run: DagsterRun) -> bool:
    info = run.tags.get(GRPC_INFO_TAG)
    if not info:
        return False  # not launched through a code server: e.g. execute_in_process
    grpc_info = json.loads(info)
    return bool(grpc_info.get("socket")) or grpc_info.get("host") in LOCAL_HOSTS


def worker_start(instance, run_id: str) -> tuple[int, float] | None:
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
