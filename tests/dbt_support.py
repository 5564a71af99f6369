"""Running ``dbt build`` against a test warehouse, the way the Dagster assets do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
from dagster import TimeWindow

from orchestration.defs.dbt.args import dbt_build_args
from orchestration.defs.dbt.project import DBT_PROJECT_DIR


def dbt_build(
    warehouse: str,
    target: Path,
    window: TimeWindow | None,
    *select: str,
    extra_vars: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``dbt build --select <select>`` for the window, on ``warehouse``; output captured."""
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            *dbt_build_args(window, extra_vars),
            "--select",
            *select,
            "--target-path",
            str(target),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
        ],
        cwd=DBT_PROJECT_DIR,
        env={**os.environ, "TOKENBILL_WAREHOUSE_PATH": warehouse, "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
    )


def query(warehouse: str, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of ``sql`` on the warehouse, opened read-only."""
    with duckdb.connect(warehouse, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()
