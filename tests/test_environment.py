"""The environment file ``make demo`` / ``make ui`` write, sourced by a real shell."""

from __future__ import annotations

import socket
import subprocess

from orchestration.environment import demo_s3_port, write_env_file
from orchestration.settings import SETTINGS
from tests.conftest import free_port


def sourced(path, *names: str) -> dict[str, str]:
    """The variables a POSIX shell has after ``. <path>`` (started with an empty env)."""
    script = f". {path}; " + "; ".join(f'printf "%s\\n" "${name}"' for name in names)
    out = subprocess.run(["sh", "-c", script], env={}, capture_output=True, text=True, check=True)
    return dict(zip(names, out.stdout.splitlines(), strict=True))


def test_the_file_exports_every_setting_dagster_home_and_the_s3_server(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster home"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:40001")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "demo")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "it's a secret")
    monkeypatch.setenv("TOKENBILL_WAREHOUSE_PATH", str(tmp_path / "wh.duckdb"))
    monkeypatch.delenv("TOKENBILL_ANALYST_DIR", raising=False)
    monkeypatch.setenv("TOKENBILL_S3_PREFIX", "usage/v2")
    path = write_env_file("make demo", tmp_path / "env")

    values = sourced(
        path, *SETTINGS, "DAGSTER_HOME", "AWS_ENDPOINT_URL_S3", "AWS_SECRET_ACCESS_KEY"
    )
    assert values["DAGSTER_HOME"] == str(tmp_path / "dagster home")
    assert values["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:40001"
    assert values["AWS_SECRET_ACCESS_KEY"] == "it's a secret"
    assert values["TOKENBILL_S3_PREFIX"] == "usage/v2"
    assert values["TOKENBILL_WAREHOUSE_PATH"] == str(tmp_path / "wh.duckdb")
    # The copy's directory is written out, resolved: analyst/ beside the warehouse.
    assert values["TOKENBILL_ANALYST_DIR"] == str(tmp_path / "analyst")
    assert values["TOKENBILL_INVOICE_GRACE_DAYS"] == "3"
    assert path.read_text().startswith("# tokenbill environment, written by make demo at ")


def test_the_demo_server_keeps_the_recorded_port_while_it_is_free(tmp_path):
    env = tmp_path / "env"
    port = free_port()
    env.write_text(f"export AWS_ENDPOINT_URL_S3=http://127.0.0.1:{port}\n")
    assert demo_s3_port(env) == port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        other = demo_s3_port(env)
    assert other != port
