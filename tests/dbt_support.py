"""Running ``dbt build`` against a test warehouse, the way the Dagster assets do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
from dagster import TimeWindow

from orchestration.defs.dbt.args import BUILD_ARGS, dbt_build_args, dbt_build_env
from orchestration.defs.dbt.project import DBT_PROJECT_DIR


def dbt_build(
    warehouse: str,
    target: Path,
    window: TimeWindow | None,
    *select: str,
    settings: dict[str, str] | None = None,
    by_hand: bool = False,
    full_refresh: bool = False,
) -> subprocess.CompletedProcess:
    """``dbt build --select <select>`` for the window, on ``warehouse``; output captured.

    The window and ``settings`` (``as_of``, ``invoice_grace_days``) reach dbt in its
    environment, as the assets pass them; ``by_hand`` passes them as ``--vars`` instead, the
    form an operator types. No ``select`` builds the whole project.
    """
    env = {**os.environ, "TOKENBILL_WAREHOUSE_PATH": warehouse, "DO_NOT_TRACK": "1"}
    if by_hand:
        args = dbt_build_args(window, settings)
    else:
        args = list(BUILD_ARGS)
        for name, value in dbt_build_env(window, settings or {}).items():
            env.pop(name, None)
            if value is not None:
                env[name] = value
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            *args,
            *(["--full-refresh"] if full_refresh else []),
            *(["--select", *select] if select else []),
            "--target-path",
            str(target),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
        ],
        cwd=DBT_PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
    )


def query(warehouse: str, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of ``sql`` on the warehouse, opened read-only."""
    with duckdb.connect(warehouse, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()
