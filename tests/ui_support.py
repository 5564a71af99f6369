"""Helpers for the tests that start the deployment a human uses: the webserver + daemon pair
and its GraphQL calls (``orchestration/dagster_services.py``, which the demo uses too,
re-exported here), an instance for them, process inspection, a TCP gate in front of S3, and a
headless Chromium screenshot of a UI page.

Nothing here is a pytest fixture; the tests wire them together.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

from orchestration.dagster_services import (  # noqa: F401 (re-exported for the tests)
    BIN,
    LOCATION,
    REPO_SELECTOR,
    REPOSITORY,
    TERMINAL_RUN_STATUSES,
    DagsterServices,
    GraphQLError,
    create_storage,
    failure_summary,
    free_port,
    get_run,
    launch_run,
    wait_for,
    wait_for_run,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")


def prepare_instance(home: Path, run_monitoring: Mapping[str, int] | None = None) -> Path:
    """``home`` as a DAGSTER_HOME with the shipped ``orchestration/dagster.yaml`` (its
    ``run_monitoring`` settings overridden by ``run_monitoring``) and its storage created.

    The storage is created here because the webserver and the daemon starting at once on an
    empty DAGSTER_HOME race to create it (alembic CommandError in one of them)."""
    import yaml

    home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO_ROOT / "orchestration" / "dagster.yaml").read_text())
    if run_monitoring:
        config["run_monitoring"] = {**config["run_monitoring"], **run_monitoring}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    create_storage(home)
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
