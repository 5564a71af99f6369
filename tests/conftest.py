"""Fixtures that start real things: an S3 server on a free port, a DuckDB file, an instance."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from dagster import DagsterInstance
from moto.server import ThreadedMotoServer

from orchestration.dagster_services import wait_for

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse-order",
        action="store_true",
        help="run the collected tests in reverse order (shows tests that need an earlier one)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse-order"):
        items.reverse()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _one_spark_per_module() -> Iterator[None]:
    """A module that started Spark (dbt-spark's session mode, a test's session) ends its JVM
    when it is done: a session's static settings (warehouse directory, Derby metastore) live
    as long as the JVM, so the next module's Spark would find the last module's metastore
    (deleted with its tmp directory: ``HiveException`` on ``DBS``)."""
    yield
    import sys

    if "pyspark" not in sys.modules:
        return
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from orchestration.warehouse import end_spark_jvm

    # dbt-spark's session is made in a dbt thread: not this thread's active session.
    session = SparkSession.getActiveSession() or SparkSession._instantiatedSession
    if session is not None:
        session.stop()
    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    end_spark_jvm()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, spoken to over HTTP like any S3 endpoint."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(
        AWS_ENDPOINT_URL_S3=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_in_a_child() -> Iterator[str]:
    """moto's S3 server in a child process, for a test that measures this process's memory:
    the in-process server (``s3_endpoint``) allocates on this process's heap while it serves a
    body, which ``tracemalloc`` would count as the reader's. Yields the endpoint URL."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def serving() -> bool:
        if child.poll() is not None:
            raise RuntimeError(f"moto's server exited ({child.returncode}) on port {port}")
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True

    try:
        wait_for(f"moto's S3 server on port {port}", serving, timeout=60, every=0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.kill()
        child.wait()


_S3_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"tb-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_client(s3_endpoint: str):
    return boto3.client("s3")


@pytest.fixture
def warehouse_path(tmp_path: Path) -> str:
    return str(tmp_path / "warehouse.duckdb")


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A real Dagster instance in a temporary DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as inst:
        yield inst
