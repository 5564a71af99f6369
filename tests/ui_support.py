"""Helpers for ``test_ui.py``: a real ``dagster-webserver`` + ``dagster-daemon``, spoken to over
HTTP (GraphQL), and a headless Chromium screenshot of a UI page.

Nothing here is a pytest fixture; ``test_ui.py`` wires them together.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
LOCATION = "tokenbill"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the repository a Definitions object becomes
REPO_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class GraphQLError(AssertionError):
    pass


class DagsterServices:
    """``dagster-webserver`` and ``dagster-daemon`` on ``workspace.yaml``, run from the repo root.

    Each runs in its own session (process group), so ``stop`` also ends what they spawned: the
    code server and the run worker processes.
    """

    def __init__(self, env: Mapping[str, str], log_dir: Path, port: int | None = None):
        self.env = dict(env)
        self.log_dir = log_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start_make_ui(self, events: int) -> None:
        """``make ui`` (``dagster dev`` on a generated month) instead of the two services, in
        ``self.env`` as given: e.g. a bare shell's, without the venv on PATH."""
        args = f"ARGS=--events {events} --port {self.port}"
        self._spawn({"make-ui": [shutil.which("make", path=self.env.get("PATH")), "ui", args]})

    def start(self) -> None:
        workspace = ["-w", str(REPO_ROOT / "workspace.yaml")]
        self._spawn(
            {
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
        )

    def _spawn(self, commands: Mapping[str, list[str]]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, cmd in commands.items():
            with open(self.log_path(name), "wb") as log:
                self.procs[name] = subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

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
        """On an exception, print the tail of both logs (pytest shows it with the failure)."""
        try:
            yield
        except BaseException:
            print(self.log_tails(lines))
            raise

    def assert_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise AssertionError(f"exited early (name: return code): {dead}")

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
                raise AssertionError(f"code location {LOCATION!r} failed to load: {location}")
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


# -- runs over GraphQL ----------------------------------------------------------------------

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

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId jobName status assetSelection { path } tags { key value } }
    ... on Error { message }
  }
}
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

TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


def launch_run(services: DagsterServices, job_name: str, tags: dict | None = None) -> str:
    params = {"selector": {**REPO_SELECTOR, "jobName": job_name}, "runConfigData": {}}
    if tags:
        params["executionMetadata"] = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
    result = services.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def get_run(services: DagsterServices, run_id: str) -> dict:
    run = services.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run", run
    return run


def wait_for_run(services: DagsterServices, run_id: str, timeout: float) -> dict:
    def finished():
        services.assert_alive()
        run = get_run(services, run_id)
        return run if run["status"] in TERMINAL_RUN_STATUSES else None

    return wait_for(f"run {run_id} to finish", finished, timeout, every=2)


def failure_summary(services: DagsterServices, run_id: str) -> str:
    """The run's ERROR events and their errors: what the UI's run page would show in red."""
    logs = services.graphql(RUN_FAILURES, {"runId": run_id})["logsForRun"]
    lines = [f"run {run_id} did not succeed:"]
    for event in logs.get("events", []):
        if event.get("level") == "ERROR" or event.get("error"):
            error = (event.get("error") or {}).get("message", "")
            lines.append(
                f"  {event['__typename']} {event.get('stepKey') or ''}: {event['message']} {error}"
            )
    return "\n".join(lines)


def prepare_instance(home: Path, run_monitoring: Mapping[str, int] | None = None) -> Path:
    """``home`` as a DAGSTER_HOME with the shipped ``orchestration/dagster.yaml`` (its
    ``run_monitoring`` settings overridden by ``run_monitoring``) and its storage created.

    The storage is created here because the webserver and the daemon starting at once on an
    empty DAGSTER_HOME race to create it (alembic CommandError in one of them)."""
    import yaml
    from dagster import DagsterInstance

    home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO_ROOT / "orchestration" / "dagster.yaml").read_text())
    if run_monitoring:
        config["run_monitoring"] = {**config["run_monitoring"], **run_monitoring}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
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
    return home


# -- processes ------------------------------------------------------------------------------


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``: pid -> command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = parent_pid(int(entry.name))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if alive(child):
            found[child] = cmdline(child)
        todo += children.get(child, [])
    return found


class GateProxy:
    """A TCP proxy in front of the S3 server that can hold every byte sent to it.

    ``close()`` makes requests hang (as a stalled network does) until ``open()``: a run reading
    S3 through it stays in its ingestion step, which is where a test wants to kill it."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._open = threading.Event()
        self._open.set()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def stop(self) -> None:
        self._stopped = True
        self._open.set()
        self._server.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, gated: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if gated:
                    self._open.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the leader's pid


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


def _chromium(args: list[str], url: str, profile_dir: Path, wait_ms: int) -> str:
    """Run headless Chromium on ``url``; its stdout. Fails loudly if Chromium is missing:
    ``make chromium`` (scripts/install-chromium.sh) installs it."""
    if not CHROMIUM.exists():
        raise AssertionError(
            f"{CHROMIUM} is missing, so the UI cannot be looked at: run `make chromium` "
            "(scripts/install-chromium.sh; as root, apt-get install chromium)"
        )
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile_dir}",
        "--window-size=1600,1000",
        # Virtual time: the page's timers and fetches run until it has been idle this long.
        f"--virtual-time-budget={wait_ms}",
        *args,
        url,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(
            f"chromium failed (exit {result.returncode}) on {url}:\n{result.stderr[-3000:]}"
        )
    return result.stdout


def screenshot(url: str, out: Path, profile_dir: Path, wait_ms: int = 20000) -> Path:
    """A 1600x1000 PNG of ``url`` as headless Chromium renders it."""
    _chromium([f"--screenshot={out}"], url, profile_dir, wait_ms)
    if not out.exists():
        raise AssertionError(f"chromium wrote no screenshot of {url} to {out}")
    return out


def dump_dom(url: str, profile_dir: Path, wait_ms: int = 20000) -> str:
    """The page's DOM (HTML) after its scripts ran."""
    return _chromium(["--dump-dom"], url, profile_dir, wait_ms)


def copy_for_humans(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest
