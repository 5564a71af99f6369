"""Resources shared by every domain: the S3 bucket of usage events and the DuckDB warehouse."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import duckdb
from botocore.config import Config
from dagster import ConfigurableResource
from pydantic import Field

from orchestration.errors import SetupError, explain_warehouse_lock
from orchestration.settings import SETTINGS, analyst_copy_path

#: Every asset that writes the warehouse runs in this pool; the instance limits it to 1
#: (DuckDB allows one writer per file).
WAREHOUSE_POOL = "tokenbill_warehouse"


class S3UsageBucket(ConfigurableResource):
    """The bucket and prefix where producers write usage events.

    The endpoint and credentials come from boto3's standard chain (``AWS_ENDPOINT_URL_S3``,
    ``AWS_ACCESS_KEY_ID``...), so the same code talks to AWS, MinIO or the local demo server.
    """

    bucket: str = Field(description="S3 bucket of usage-event objects.")
    prefix: str = Field(description="Key prefix above dt=YYYY-MM-DD/hour=HH/.")

    def client(self):
        return boto3.client(
            "s3",
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=16),
        )

    def hour_prefix(self, date: str, hour: int) -> str:
        base = f"{self.prefix.strip('/')}/" if self.prefix.strip("/") else ""
        return f"{base}dt={date}/hour={hour:02d}/"


class Warehouse(ConfigurableResource):
    """The DuckDB warehouse file, and the copy of it analysts read."""

    path: str = Field(description="Path of the DuckDB file.")
    analyst_dir: str = Field(
        default=SETTINGS["TOKENBILL_ANALYST_DIR"][0],
        description="Directory of the analysts' read-only copy, published after every run.",
    )
    memory_limit: str = Field(
        default=SETTINGS["TOKENBILL_DUCKDB_MEMORY_LIMIT"][0],
        description="DuckDB's memory_limit for this connection; beyond it DuckDB spills to disk.",
    )
    lock_timeout_seconds: float = Field(
        default=300.0,
        description="How long to wait for another process's write lock before failing.",
    )

    @contextmanager
    def connect(
        self, read_only: bool = False, memory_limit: str | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file, waiting while another process holds DuckDB's single-writer lock.

        The concurrency pool already serialises tokenbill's own writers; the wait covers an
        analyst's client or a run launched outside the pool.
        """
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        while True:
            try:
                con = duckdb.connect(
                    self.path,
                    read_only=read_only,
                    config={"memory_limit": memory_limit or self.memory_limit},
                )
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() > deadline:
                    raise SetupError(
                        explain_warehouse_lock(self.path, exc, self.lock_timeout_seconds)
                    ) from exc
                time.sleep(0.5)
        try:
            yield con
        finally:
            con.close()

    @property
    def analyst_path(self) -> Path:
        """The analysts' copy (``analyst_copy_path``), published by ``analyst_snapshot``."""
        return analyst_copy_path(self.path, self.analyst_dir)
