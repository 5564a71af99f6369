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

    def start(self) -> None:
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
