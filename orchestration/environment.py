"""The environment file: one documented way to run anything outside the demo wrappers.

``make demo`` and ``make ui`` write ``.tokenbill/env``: shell ``export`` lines with every
tokenbill setting as the demo used it, ``DAGSTER_HOME``, and the endpoint and credentials of
the demo's S3 server. Sourcing it (``. .tokenbill/env``) gives a shell what the README's CLI
and Python examples need: ``tokenbill check``, ``dagster``, ``dbt``, ``run_period``... The
embedded S3 server keeps its port from one start to the next (the port recorded in the file,
when it is free), so a shell that sourced the file stays valid across ``make ui`` restarts;
the server lives only while ``make demo`` or ``make ui`` runs.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from datetime import UTC, datetime
from pathlib import Path

from orchestration.settings import REPO_ROOT, SETTINGS, analyst_copy_path, setting

ENV_FILE = REPO_ROOT / ".tokenbill" / "env"
#: The AWS variables of the demo's server (credentials for the local server only).
AWS_VARIABLES = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)
OTHER_VARIABLES = ("DAGSTER_HOME", "DO_NOT_TRACK", "DAGSTER_DISABLE_TELEMETRY")
_LOCAL_ENDPOINT = re.compile(r"^export AWS_ENDPOINT_URL_S3=.*127\.0\.0\.1:(\d+)", re.M)


def environment_values() -> dict[str, str]:
    """What the file exports: the settings in effect, then Dagster's and AWS's variables."""
    values = {name: setting(name) for name in SETTINGS}
    copy = analyst_copy_path(values["TOKENBILL_WAREHOUSE_PATH"], values["TOKENBILL_ANALYST_DIR"])
    values["TOKENBILL_ANALYST_DIR"] = str(copy.parent)
    for name in ("TOKENBILL_WAREHOUSE_PATH", "TOKENBILL_CATALOG_DIR", "TOKENBILL_ANALYST_DIR"):
        values[name] = os.path.abspath(values[name])  # the file works from any directory
    for name in (*OTHER_VARIABLES, *AWS_VARIABLES):
        if os.environ.get(name):
            values[name] = os.environ[name]
    return values


def render_env_file(values: dict[str, str], written_by: str) -> str:
    lines = [
        f"# tokenbill environment, written by {written_by} at "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "# Source it before the README's CLI and Python examples:  . .tokenbill/env",
        "# The S3 endpoint is the demo's embedded server: it answers while `make ui` (or",
        "# `make demo`) runs. For a real bucket, set the AWS_* variables of your account",
        "# instead, then run `.venv/bin/tokenbill check`.",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def write_env_file(written_by: str, path: Path = ENV_FILE) -> Path:
    """Write the environment file atomically (a shell sourcing it never reads half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(render_env_file(environment_values(), written_by))
    os.replace(staging, path)
    return path


def demo_s3_port(path: Path = ENV_FILE) -> int:
    """The port for the demo's S3 server: the one the file records if it is free, else any."""
    recorded = _LOCAL_ENDPOINT.search(path.read_text()) if path.exists() else None
    if recorded and _free(int(recorded[1])):
        return int(recorded[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
