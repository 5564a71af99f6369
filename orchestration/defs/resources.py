"""Resources shared by every domain: the S3 bucket of usage events and the DuckDB warehouse."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import boto3
import duckdb
from botocore.config import Config
from dagster import ConfigurableResource
from pydantic import Field

from orchestration.defs.ingestion.parsing import BodyRetry
from orchestration.errors import SetupError, explain_warehouse_lock
from orchestration.settings import SETTINGS, analyst_copy_path, engine_setting, env_or_default
from orchestration.warehouse import DuckDBWarehouse, SparkWarehouse, WarehouseTables, spark_session

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
    export_prefix: str = Field(
        default=SETTINGS["TOKENBILL_EXPORT_PREFIX"][0],
        description="Key prefix, in the same bucket, of the finalized-invoice export.",
    )
    enforcement_key: str = Field(
        default=SETTINGS["TOKENBILL_ENFORCEMENT_KEY"][0],
        description="Key, in the same bucket, of the enforcement file a gateway reads.",
    )
    alerts_prefix: str = Field(
        default=SETTINGS["TOKENBILL_ALERTS_PREFIX"][0],
        description="Key prefix, in the same bucket, of the billing alerts feed (JSON Lines).",
    )
    retry_mode: Literal["standard", "adaptive"] = Field(
        default="standard",
        description="boto3's retry mode for requests (503 SlowDown, 500, connection errors); "
        "'adaptive' also slows the client down while S3 throttles.",
    )
    request_attempts: int = Field(
        default=6, ge=1, description="Attempts per request, the first included (boto3's)."
    )
    body_read_attempts: int = Field(
        default=5,
        ge=1,
        description="Attempts to read an object whose body fails mid-stream (a connection "
        "reset, a stall, a short body): boto3 retries requests, not body reads.",
    )
    read_timeout_seconds: float = Field(
        default=60.0, gt=0, description="A socket silent this long fails (and is retried)."
    )

    def client(self):
        return boto3.client(
            "s3",
            config=Config(
                retries={"total_max_attempts": self.request_attempts, "mode": self.retry_mode},
                read_timeout=self.read_timeout_seconds,
                max_pool_connections=16,
            ),
        )

    def body_retry(self) -> BodyRetry:
        return BodyRetry(attempts=self.body_read_attempts)

    def hour_prefix(self, date: str, hour: int) -> str:
        base = f"{self.prefix.strip('/')}/" if self.prefix.strip("/") else ""
        return f"{base}dt={date}/hour={hour:02d}/"


class Warehouse(ConfigurableResource):
    """The warehouse: the DuckDB file and the copy of it analysts read, or with the spark
    engine the dbt spark target's tables and the lake (``tables()``)."""

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
    engine: str = Field(
        default=SETTINGS["TOKENBILL_ENGINE"][0],
        description="duckdb (the file above) or spark (TOKENBILL_ENGINE).",
    )
    lake_root: str = Field(
        default=SETTINGS["TOKENBILL_LAKE_ROOT"][0],
        description="Root of the Parquet lake the Spark sources read (TOKENBILL_LAKE_ROOT).",
    )
    spark_warehouse: str = Field(
        default=SETTINGS["TOKENBILL_SPARK_WAREHOUSE"][0],
        description="The dbt spark target's warehouse directory (TOKENBILL_SPARK_WAREHOUSE).",
    )
    spark_master: str = Field(
        default=SETTINGS["TOKENBILL_SPARK_MASTER"][0],
        description="Spark master of the Python assets' session (TOKENBILL_SPARK_MASTER).",
    )

    @property
    def is_spark(self) -> bool:
        """Whether the engine is spark; a wrong engine fails with one line naming the setting."""
        return engine_setting(self.engine) == "spark"

    @contextmanager
    def tables(self, read_only: bool = False) -> Iterator[WarehouseTables]:
        """The warehouse operations (orchestration/warehouse.py) on the engine's warehouse:
        the DuckDB file (``connect``), or a Spark session on the dbt spark target's tables
        writing tokenbill's own tables to the lake, for the length of the block."""
        if self.is_spark:
            with spark_session(self.spark_master, self.spark_warehouse) as spark:
                yield SparkWarehouse(spark, self.lake_root)
            return
        with self.connect(read_only=read_only) as con:
            yield DuckDBWarehouse(con)

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


def shared_resources(
    bucket: str | None = None,
    prefix: str | None = None,
    warehouse_path: str | None = None,
    analyst_dir: str | None = None,
) -> dict[str, ConfigurableResource]:
    """The resources every domain uses, bound to the settings; arguments override them."""
    return {
        "s3": S3UsageBucket(
            bucket=bucket or env_or_default("TOKENBILL_S3_BUCKET"),
            prefix=prefix if prefix is not None else env_or_default("TOKENBILL_S3_PREFIX"),
            export_prefix=env_or_default("TOKENBILL_EXPORT_PREFIX"),
            enforcement_key=env_or_default("TOKENBILL_ENFORCEMENT_KEY"),
            alerts_prefix=env_or_default("TOKENBILL_ALERTS_PREFIX"),
        ),
        "warehouse": Warehouse(
            path=warehouse_path or env_or_default("TOKENBILL_WAREHOUSE_PATH"),
            memory_limit=env_or_default("TOKENBILL_DUCKDB_MEMORY_LIMIT"),
            analyst_dir=analyst_dir or env_or_default("TOKENBILL_ANALYST_DIR"),
            engine=env_or_default("TOKENBILL_ENGINE"),
            lake_root=env_or_default("TOKENBILL_LAKE_ROOT"),
            spark_warehouse=env_or_default("TOKENBILL_SPARK_WAREHOUSE"),
            spark_master=env_or_default("TOKENBILL_SPARK_MASTER"),
        ),
    }
