"""Publishing the analysts' copy of the warehouse: a consistent file, swapped in atomically.

Why a copy. DuckDB allows one writer per file, and a writer cannot open a file that another
process holds open, even read-only: an analyst's session on the warehouse made the next run
wait (``Warehouse.lock_timeout_seconds``) and then fail. Analysts and ``make docs`` read a
copy instead, which no run ever opens for writing, so nothing a reader does can block a run.
The price is staleness (the copy is the state as of the last run that finished) and one file
copy per run (see the README's "How analysts read while runs write" for the measurements).

How. Holding DuckDB's write lock (the step is in the ``tokenbill_warehouse`` pool, so no other
tokenbill writer runs; the lock keeps out any other process), ``checkpoint`` so that the file
alone holds every committed change, copy the file into ``<analyst_dir>/.publishing/``, open
the copy read-only to prove it is a database, then ``os.replace`` it over the published file.
The rename is atomic: whoever opens the path gets the previous copy or the new one, never a
mix; a session already open keeps reading the previous copy (its file lives on until the
session closes) and sees the new data once it reconnects.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from orchestration.defs.resources import Warehouse

STAGING_DIR = ".publishing"


@dataclass(frozen=True)
class Published:
    path: Path
    size_bytes: int
    seconds: float
    tables: int


def publish_snapshot(warehouse: Warehouse) -> Published:
    """Copy the warehouse to ``warehouse.analyst_path`` atomically (see the module docstring)."""
    began = time.monotonic()
    destination = warehouse.analyst_path
    staging = destination.parent / STAGING_DIR / destination.name
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.unlink(missing_ok=True)
    with warehouse.connect() as con:
        con.execute("checkpoint")
        shutil.copyfile(warehouse.path, staging)
    # The staging copy has the warehouse's file name, so its views resolve as they will there.
    with duckdb.connect(str(staging), read_only=True) as copy:
        tables = copy.execute(
            "select count(*) from information_schema.tables "
            "where table_schema not in ('main', 'information_schema', 'pg_catalog')"
        ).fetchone()[0]
    staging.chmod(0o444)  # a reminder to open it read-only; the rename does not need it
    # A write-ahead log left beside the published file by a read-write session belongs to the
    # previous copy: DuckDB would replay it onto the new one.
    destination.with_name(destination.name + ".wal").unlink(missing_ok=True)
    os.replace(staging, destination)
    _fsync_dir(destination.parent)
    return Published(destination, destination.stat().st_size, time.monotonic() - began, tables)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable: after a crash the path holds the new copy or the old one."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
