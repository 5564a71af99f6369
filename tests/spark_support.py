"""Running a job on a given engine: one bucket, one Dagster instance, the engine's warehouse.

``EnginePipeline(root, bucket, "spark")`` builds the code location with ``TOKENBILL_ENGINE``
and the Spark settings pointing under ``root`` (the lake, the dbt spark target's warehouse
directory and metastore), and ``run`` executes a job (or a subset of its assets) for a range
of partitions as a real in-process Dagster run; ``spark()`` opens a session on the same
tables afterwards (one at a time: orchestration/warehouse.py, ``spark_session``). With
``"duckdb"`` the same calls run on a DuckDB file, so a test can run one period on both
engines and compare (the whole-month "same bills" test).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult

from orchestration.defs.operations.schedules import RANGE_END_TAG, RANGE_START_TAG
from orchestration.runner import GrainRun, run_period
from orchestration.warehouse import SparkWarehouse, spark_session

REPO_ROOT = Path(__file__).resolve().parents[1]


class EnginePipeline:
    def __init__(
        self,
        root: Path,
        bucket: str,
        engine: str,
        prefix: str = "usage",
        catalog_dir: str | None = None,
        settings: dict[str, str] | None = None,
    ):
        from orchestration.definitions import build_defs

        self.engine = engine
        self.bucket = bucket
        self.warehouse = str(root / "warehouse.duckdb")
        self.lake = root / "lake"
        self.spark_warehouse = root / "spark-warehouse"
        self.env = {
            "TOKENBILL_ENGINE": engine,
            "TOKENBILL_LAKE_ROOT": str(self.lake),
            "TOKENBILL_SPARK_WAREHOUSE": str(self.spark_warehouse),
            "TOKENBILL_SPARK_MASTER": "local[1]",
            **(settings or {}),
        }
        with self.environment():
            self.defs = build_defs(
                bucket=bucket, prefix=prefix, warehouse_path=self.warehouse, catalog_dir=catalog_dir
            )
        # The project's instance settings (orchestration/dagster.yaml): its storage writes a
        # ranged run's ~7,500 asset events in batches (orchestration/storage.py), minutes
        # of a month's runs on the stock SQLite storage.
        home = root / "home"
        home.mkdir()
        shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
        self.env["DAGSTER_HOME"] = str(home)
        with self.environment():
            self.instance = DagsterInstance.from_config(str(home))

    @contextmanager
    def environment(self) -> Iterator[None]:
        """The engine's settings in this process's environment (bound settings are resolved
        at run launch), restored on exit."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def run(
        self,
        job_name: str,
        first_key: str,
        last_key: str | None = None,
        assets: Sequence[str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> ExecuteInProcessResult:
        """One run of ``job_name`` over [first_key, last_key] (only ``assets``, as
        ``a/b`` keys, when given), failing the test on a failed step."""
        job = self.defs.resolve_job_def(job_name)
        run_tags = {RANGE_START_TAG: first_key, RANGE_END_TAG: last_key or first_key}
        with self.environment():
            return job.execute_in_process(
                instance=self.instance,
                tags={**run_tags, **(tags or {})},
                asset_selection=[AssetKey(a.split("/")) for a in assets] if assets else None,
            )

    def period(self, start: datetime, end: datetime) -> list[GrainRun]:
        """The catalog, then [start, end) at every grain, one ranged run each (as the demo
        and the benchmark backfill a month); a failed run is returned like the others and
        the next grains still run (the caller asserts on them)."""
        with self.environment():
            return run_period(
                self.defs, start, end, self.instance, log_level="WARNING", raise_on_error=False
            )

    @contextmanager
    def spark(self) -> Iterator[SparkWarehouse]:
        """The warehouse operations on the Spark tables the runs built."""
        with spark_session("local[1]", str(self.spark_warehouse)) as session:
            yield SparkWarehouse(session, str(self.lake))
