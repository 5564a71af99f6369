"""Running ``dbt build`` against a test warehouse, the way the Dagster assets do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
from dagster import TimeWindow

from orchestration.defs.dbt.args import BUILD_ARGS, RUN_SETTING_ENV, dbt_build_args, dbt_build_env
from orchestration.defs.dbt.project import DBT_PROJECT_DIR


def dbt(
    target: Path, *args: str, warehouse: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    """``dbt <args>`` on ``warehouse`` with the project's profile; output captured.

    ``env`` sets (or, with ``None``, unsets) variables of dbt's environment; no run setting
    leaks in from this process's, so without them dbt uses its defaults (all of history).
    """
    run_env = {**os.environ, "TOKENBILL_WAREHOUSE_PATH": warehouse, "DO_NOT_TRACK": "1"}
    for name, value in {**dict.fromkeys(RUN_SETTING_ENV.values()), **(env or {})}.items():
        run_env.pop(name, None)
        if value is not None:
            run_env[name] = value
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            *args,
            "--target-path",
            str(target),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
        ],
        cwd=DBT_PROJECT_DIR,
        env=run_env,
        capture_output=True,
        text=True,
    )


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
    if by_hand:
        args, env = dbt_build_args(window, settings), {}
    else:
        args, env = list(BUILD_ARGS), dbt_build_env(window, settings or {})
    return dbt(
        target,
        *args,
        *(["--full-refresh"] if full_refresh else []),
        *(["--select", *select] if select else []),
        warehouse=warehouse,
        env=env,
    )


def query(warehouse: str, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of ``sql`` on the warehouse, opened read-only."""
    with duckdb.connect(warehouse, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def landing_tables(warehouse: str) -> None:
    """Create every table the dbt project reads (its sources), empty, with the DDL of the
    Python code that writes them in production: ingestion's raw schema, the catalog loads
    (pricing and wallets) and the wallet ledger."""
    from orchestration.defs.ingestion.landing import ensure_raw_schema
    from orchestration.defs.rating.catalog import (
        catalog_tables,
        load_catalog,
        read_provider_costs,
        write_catalog,
    )
    from orchestration.defs.wallets.catalog import wallet_tables
    from orchestration.defs.wallets.ledger_asset import LEDGER_DDL

    catalog_dir = DBT_PROJECT_DIR.parent / "catalog"
    tables = catalog_tables(
        load_catalog(catalog_dir), read_provider_costs(catalog_dir / "provider_costs.csv")
    )
    with duckdb.connect(warehouse) as con:
        ensure_raw_schema(con)
        write_catalog(con, {name: frame.clear() for name, frame in tables.items()})
        write_catalog(con, wallet_tables([]))
        con.execute(LEDGER_DDL)


def raw_events(events):
    """raw.usage_events rows for hand-made scenarios: ``events`` is (customer, event time,
    output tokens, extra columns); provider p, model m, successful first attempts, no input."""
    import polars as pl

    rows = []
    for i, (customer, ts, output, extra) in enumerate(events):
        row = {
            "partition_hour": ts.replace(minute=0),
            "source_key": "k",
            "line_number": i + 1,
            "event_id": f"e{i}",
            "event_ts": ts,
            "customer_id": customer,
            "provider": "p",
            "model": "m",
            "feature": None,
            "status": "success",
            "attempt": 1,
            "input_tokens": 0,
            "output_tokens": output,
        }
        row.update(extra)
        rows.append(row)
    return pl.DataFrame(rows)
