"""``dagster-webserver`` + ``dagster-daemon`` on ``workspace.yaml``, spoken to over GraphQL.

The demo launches its month through them (``launchPartitionBackfill``, as the UI's
*Materialize* does), so the month is listed under the UI's *Backfills*; the UI and crash tests
start the same pair. Only Dagster's public interfaces are used: its two commands and the
GraphQL API its UI speaks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from orchestration.settings import REPO_ROOT

BIN = Path(sys.executable).parent
LOCATION = "tokenbill"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the repository a Definitions object becomes
REPO_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
#: A run's terminal statuses, and a backfill's (COMPLETED is the pre-1.9 name of success).
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
TERMINAL_BACKFILL_STATUSES = {
    "COMPLETED",
    "COMPLETED_SUCCESS",
    "COMPLETED_FAILED",
    "FAILED",
    "CANCELED",
}
SUCCESSFUL_BACKFILL_STATUSES = {"COMPLETED", "COMPLETED_SUCCESS"}

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GraphQLError(RuntimeError):
    """The webserver answered with an error (or not at all)."""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """Call ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (OSError, urllib.error.URLError, GraphQLError) as exc:  # not up yet
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"gave up after {timeout:.0f}s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        time.sleep(every)


class DagsterServices:
    """``dagster-webserver`` and ``dagster-daemon`` on ``workspace.yaml``, run from the repo root.

    Each runs in its own session (process group), so ``stop`` also ends what they spawned: the
    code server and the run worker processes. Their output goes to ``log_dir/<name>.log``, or,
    for a name given in ``start(output=...)``, line by line to that callable.
    """

    def __init__(self, env: Mapping[str, str], log_dir: Path, port: int | None = None):
        self.env = dict(env)
        self.log_dir = log_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self._readers: list[threading.Thread] = []
        self._on_stop: Callable[[], Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start_make_ui(self, events: int) -> None:
        """``make ui`` (``dagster dev`` on a generated month) instead of the two services, in
        ``self.env`` as given: e.g. a bare shell's, without the venv on PATH."""
        import shutil

        args = f"ARGS=--events {events} --port {self.port}"
        self._spawn({"make-ui": [shutil.which("make", path=self.env.get("PATH")), "ui", args]})

    def start(
        self,
        output: Mapping[str, Callable[[str], Any]] | None = None,
        daemon: bool = True,
        on_stop: Callable[[], Any] | None = None,
    ) -> None:
        """The webserver (and the daemon): this environment's ``bin`` first on their PATH, as
        an activated venv has it, since dagster-dbt looks ``dbt`` up on PATH. ``on_stop`` is
        called once they are stopped and their output forwarded."""
        self._on_stop = on_stop
        path = os.pathsep.join([str(BIN), self.env.get("PATH", "")])
        self.env["PATH"] = path
        workspace = ["-w", str(REPO_ROOT / "workspace.yaml")]
        commands = {
            "webserver": [
                str(BIN / "dagster-webserver"),
                *workspace,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            "daemon": [str(BIN / "dagster-daemon"), "run", *workspace],
        }
        if not daemon:
            del commands["daemon"]
        self._spawn(commands, output or {})

    def _spawn(
        self,
        commands: Mapping[str, list[str]],
        output: Mapping[str, Callable[[str], Any]] | None = None,
    ) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        output = output or {}
        for name, cmd in commands.items():
            with open(self.log_path(name), "wb") as log:
                self.procs[name] = proc = subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if name in output else log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    text=name in output,
                )
            if name in output:
                reader = threading.Thread(
                    target=_forward, args=(proc.stdout, output[name]), daemon=True
                )
                reader.start()
                self._readers.append(reader)

    def stop(self) -> None:
        """SIGTERM each process group, then SIGKILL what is left after a grace period."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for proc in self.procs.values():
            # The group may outlive its leader (a run worker): kill it in any case.
            _signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=5)
        if self._on_stop:
            self._on_stop()
            self._on_stop = None

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_tails(self, lines: int = 60) -> str:
        out = []
        for name in self.procs:
            path = self.log_path(name)
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            tail = "\n".join(text.splitlines()[-lines:])
            out.append(f"----- {name} ({path}), last {lines} lines -----\n{tail}")
        return "\n".join(out)

    @contextlib.contextmanager
    def logs_on_failure(self, lines: int = 80) -> Iterator[None]:
        """On an exception, print the tail of the logs (pytest shows it with the failure)."""
        try:
            yield
        except BaseException:
            print(self.log_tails(lines))
            raise

    def assert_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(
                f"dagster service exited early (name: return code): {dead}; "
                f"see the logs in {self.log_dir}"
            )

    # -- talking to it ---------------------------------------------------------------------

    def wait_until_ready(self, timeout: float = 90) -> None:
        """The webserver answers and has loaded the code location without error."""

        def location_loaded():
            self.assert_alive()
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as resp:
                if resp.status != 200:
                    return None
            data = self.graphql(WORKSPACE_QUERY)["workspaceOrError"]
            entries = {e["name"]: e for e in data["locationEntries"]}
            entry = entries.get(LOCATION)
            if not entry or entry["loadStatus"] != "LOADED":
                return None
            location = entry["locationOrLoadError"]
            if location["__typename"] != "RepositoryLocation":
                raise RuntimeError(f"code location {LOCATION!r} failed to load: {location}")
            return True

        wait_for(f"the webserver at {self.url} to load {LOCATION!r}", location_loaded, timeout)

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise GraphQLError(f"HTTP {exc.code}: {exc.read()[:2000]!r}") from exc
        if payload.get("errors"):
            raise GraphQLError(json.dumps(payload["errors"], indent=2)[:4000])
        return payload["data"]


def _forward(stream, write: Callable[[str], Any]) -> None:
    for line in stream:
        write(line)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the leader's pid


def create_storage(home: Path) -> None:
    """Create the instance's storage under ``home`` (its ``dagster.yaml`` already there).

    Done before the services start: the webserver and the daemon starting at once on an
    empty DAGSTER_HOME race to create it (alembic CommandError in one of them)."""
    from dagster import DagsterInstance

    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)  # the project's storage needs it
    try:
        with DagsterInstance.from_config(str(home)):
            pass
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved


# -- runs ------------------------------------------------------------------------------------

LAUNCH_RUN = """
mutation LaunchRun($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

RUN_FIELDS = "runId jobName status startTime endTime assetSelection { path } tags { key value }"

RUN_QUERY = f"""
query Run($runId: ID!) {{
  runOrError(runId: $runId) {{
    __typename
    ... on Run {{ {RUN_FIELDS} }}
    ... on Error {{ message }}
  }}
}}
"""

RUN_FAILURES = """
query RunFailures($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ErrorEvent { error { message } }
      }
    }
  }
}
"""


def launch_run(
    services: DagsterServices,
    job_name: str,
    tags: Mapping[str, str] | None = None,
    run_config: Mapping[str, Any] | None = None,
    asset_selection: Sequence[Sequence[str]] | None = None,
) -> str:
    """``launchRun`` of ``job_name`` (only ``asset_selection``, asset key paths, if given)."""
    selector: dict[str, Any] = {**REPO_SELECTOR, "jobName": job_name}
    if asset_selection:
        selector["assetSelection"] = [{"path": list(path)} for path in asset_selection]
    params: dict[str, Any] = {"selector": selector, "runConfigData": dict(run_config or {})}
    if tags:
        params["executionMetadata"] = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
    result = services.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise GraphQLError(f"launchRun of {job_name} failed: {result}")
    return result["run"]["runId"]


def get_run(services: DagsterServices, run_id: str) -> dict:
    run = services.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
    if run["__typename"] != "Run":
        raise GraphQLError(f"run {run_id}: {run}")
    return run


def wait_for_run(services: DagsterServices, run_id: str, timeout: float) -> dict:
    def finished():
        services.assert_alive()
        run = get_run(services, run_id)
        return run if run["status"] in TERMINAL_RUN_STATUSES else None

    return wait_for(f"run {run_id} to finish", finished, timeout, every=1)


def run_errors(services: DagsterServices, run_id: str) -> list[dict[str, str]]:
    """The run's ERROR events and their errors (what the UI's run page shows in red): each
    with ``type``, ``step``, ``message`` and ``error`` (the exception's message, or "")."""
    logs = services.graphql(RUN_FAILURES, {"runId": run_id})["logsForRun"]
    return [
        {
            "type": event["__typename"],
            "step": event.get("stepKey") or "",
            "message": event["message"],
            "error": (event.get("error") or {}).get("message", ""),
        }
        for event in logs.get("events", [])
        if event.get("level") == "ERROR" or event.get("error")
    ]


def first_error(services: DagsterServices, run_id: str) -> str:
    """One line: the step and first line of the run's first exception, else its first ERROR
    message."""
    errors = run_errors(services, run_id)
    for e in [e for e in errors if e["error"].strip()] or errors:
        text = (e["error"] or e["message"]).strip().splitlines()[0]
        return f"{e['step']}: {text}" if e["step"] else text
    return "no error event recorded"


def failure_summary(services: DagsterServices, run_id: str) -> str:
    lines = [f"run {run_id} did not succeed:"]
    lines += [
        f"  {e['type']} {e['step']}: {e['message']} {e['error']}"
        for e in run_errors(services, run_id)
    ]
    return "\n".join(lines)


def run_tags(run: Mapping[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


# -- backfills -------------------------------------------------------------------------------

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL_FIELDS = f"""
  id
  status
  title
  isAssetBackfill
  numPartitions
  assetSelection {{ path }}
  error {{ message }}
  runs(limit: 100) {{ {RUN_FIELDS} }}
"""

BACKFILL_QUERY = f"""
query Backfill($backfillId: String!) {{
  partitionBackfillOrError(backfillId: $backfillId) {{
    __typename
    ... on PartitionBackfill {{ {BACKFILL_FIELDS} }}
    ... on Error {{ message }}
  }}
}}
"""

JOB_ASSETS = """
query JobAssets($selector: PipelineSelector!) {
  assetNodes(pipeline: $selector) { assetKey { path } isPartitioned }
}
"""


def partitioned_job_assets(services: DagsterServices, job_name: str) -> list[list[str]]:
    """The key paths of the job's partitioned assets, as the code location serves them."""
    selector = {**REPO_SELECTOR, "pipelineName": job_name}
    nodes = services.graphql(JOB_ASSETS, {"selector": selector})["assetNodes"]
    return sorted(node["assetKey"]["path"] for node in nodes if node["isPartitioned"])


def launch_asset_backfill(
    services: DagsterServices,
    asset_paths: Sequence[Sequence[str]],
    partition_names: Sequence[str],
    title: str,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """What the UI's *Materialize* with a partition range launches: an asset backfill, which
    the daemon turns into runs (one per range, for assets with a single-run policy)."""
    params: dict[str, Any] = {
        "assetSelection": [{"path": list(path)} for path in asset_paths],
        "partitionNames": list(partition_names),
        "title": title,
    }
    if run_config:
        params["runConfigData"] = dict(run_config)
    if tags:
        params["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
    launched = services.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise GraphQLError(f"launchPartitionBackfill ({title}) failed: {launched}")
    return launched["backfillId"]


def get_backfill(services: DagsterServices, backfill_id: str) -> dict:
    backfill = services.graphql(BACKFILL_QUERY, {"backfillId": backfill_id})
    backfill = backfill["partitionBackfillOrError"]
    if backfill["__typename"] != "PartitionBackfill":
        raise GraphQLError(f"backfill {backfill_id}: {backfill}")
    return backfill


WORKSPACE_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""
