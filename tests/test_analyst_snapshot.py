"""Analysts read while runs write: the published copy, a real analyst process, real runs.

The hand-made data set is ``pipeline_data.py``: hour 2026-10-05 07 has 5 valid events
(e1, e2, e3, e5, e6: 1000 + 500 + 300 + 0 + 700 = 2,500 input tokens), hour 08 has 2
(e9, e10: 2000 + 4000 = 6,000 input tokens).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import duckdb
import pytest
from dagster import DagsterInstance

from orchestration.definitions import build_defs
from orchestration.defs.publishing.snapshot import publish_snapshot
from orchestration.defs.resources import Warehouse
from orchestration.docs import generate
from orchestration.errors import SetupError
from orchestration.runner import run_job_range
from tests import pipeline_data as data

CATALOG_DIR = Path(__file__).parent / "fixtures" / "catalog_e2e"
HOUR_07, HOUR_08 = "2026-10-05-07:00", "2026-10-05-08:00"
#: What the analyst asks: a raw table, a mart, and a dbt view over the raw table (views name
#: the database by its file name, so this proves the copy's views resolve).
ANALYST_SQL = (
    "select (select count(*) from raw.usage_events), "
    "(select sum(input_tokens)::bigint from marts.fct_token_usage_hourly), "
    "(select count(*) from staging.stg_tokenbill__usage_events)"
)

ANALYST = textwrap.dedent(
    """
    import json, sys, duckdb
    path, sql = sys.argv[1], sys.argv[2]
    con = duckdb.connect(path, read_only=True)
    for command in sys.stdin:
        command = command.strip()
        if command == "reopen":
            con.close()
            con = duckdb.connect(path, read_only=True)
        print(json.dumps(con.execute(sql).fetchone()), flush=True)
    """
)


class Analyst:
    """A separate process holding a read-only DuckDB session open, as ``duckdb -readonly``."""

    def __init__(self, path: Path, sql: str = ANALYST_SQL):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ANALYST, str(path), sql],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str = "query") -> list:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the analyst process died"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def pipeline(tmp_path, s3_endpoint, bucket):
    data.upload(boto3.client("s3"), bucket)
    warehouse = tmp_path / "warehouse.duckdb"
    defs = build_defs(
        bucket=bucket,
        prefix=data.PREFIX,
        warehouse_path=str(warehouse),
        catalog_dir=str(CATALOG_DIR),
        analyst_dir=str(tmp_path / "analyst"),
    )
    (tmp_path / "home").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        yield defs, instance, tmp_path / "analyst" / "warehouse.duckdb"


@pytest.mark.slow
def test_an_open_analyst_session_does_not_block_a_run_and_sees_it_after_reopening(pipeline):
    defs, instance, published = pipeline
    assert run_job_range(defs, "catalog_job", None, None, instance).success
    assert run_job_range(defs, "hourly_usage_job", HOUR_07, HOUR_07, instance).success

    analyst = Analyst(published)
    try:
        assert analyst.ask() == [5, 2500, 5]
        # The run writes the warehouse and publishes a new copy while the session stays open.
        result = run_job_range(defs, "hourly_usage_job", HOUR_08, HOUR_08, instance)
        assert result.success
        # The open session keeps its consistent copy; reconnecting shows the finished run.
        assert analyst.ask() == [5, 2500, 5]
        assert analyst.ask("reopen") == [7, 8500, 7]
    finally:
        analyst.close()

    snapshot = result.asset_materializations_for_node("analyst_snapshot")[0]
    assert snapshot.metadata["path"].value == str(published)
    assert snapshot.metadata["size_bytes"].value == published.stat().st_size
    assert not (published.parent / ".publishing" / published.name).exists()


@pytest.mark.slow
def test_a_failed_run_publishes_nothing(pipeline, s3_endpoint):
    defs, instance, published = pipeline
    assert run_job_range(defs, "catalog_job", None, None, instance).success
    assert run_job_range(defs, "hourly_usage_job", HOUR_07, HOUR_07, instance).success
    before = published.read_bytes()

    broken = build_defs(
        bucket="tb-no-such-bucket",
        prefix=data.PREFIX,
        warehouse_path=str(published.parent.parent / "warehouse.duckdb"),
        catalog_dir=str(CATALOG_DIR),
        analyst_dir=str(published.parent),
    )
    result = run_job_range(broken, "hourly_usage_job", HOUR_08, HOUR_08, instance, False)
    assert not result.success
    assert published.read_bytes() == before


def test_a_writer_waiting_on_a_locked_warehouse_names_the_holder_in_one_line(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
            "print('open', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "open\n"
        warehouse = Warehouse(path=str(path), lock_timeout_seconds=1)
        with pytest.raises(SetupError) as raised, warehouse.connect():
            pass
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    program = Path(sys.executable).resolve()
    assert str(raised.value) == (
        f"the warehouse {path} (TOKENBILL_WAREHOUSE_PATH) is locked by {program} "
        f"(PID {holder.pid}) for 1s: close that session (analysts read the published "
        "snapshot in TOKENBILL_ANALYST_DIR, never the warehouse) or wait for its run to finish"
    )


@pytest.mark.slow
def test_dbt_docs_generate_reads_the_copy_while_a_writer_holds_the_warehouse(
    pipeline, tmp_path, monkeypatch
):
    defs, instance, published = pipeline
    assert run_job_range(defs, "catalog_job", None, None, instance).success
    assert run_job_range(defs, "hourly_usage_job", HOUR_07, HOUR_07, instance).success
    warehouse = published.parent.parent / "warehouse.duckdb"
    monkeypatch.setenv("TOKENBILL_WAREHOUSE_PATH", str(warehouse))
    monkeypatch.setenv("TOKENBILL_ANALYST_DIR", str(published.parent))

    # A run writing (a read-write session holds the warehouse's lock) and an analyst reading.
    writer = _hold(warehouse, read_only=False)
    analyst = Analyst(published)
    try:
        assert analyst.ask() == [5, 2500, 5]
        built = generate(tmp_path / "docs", capture_output=True, text=True, timeout=600)
    finally:
        analyst.close()
        writer.stdin.close()
        writer.wait(timeout=30)
    assert built.returncode == 0, built.stdout + built.stderr
    catalog = json.loads((tmp_path / "docs" / "catalog.json").read_text())
    hourly = catalog["nodes"]["model.tokenbill.fct_token_usage_hourly"]
    assert hourly["metadata"]["database"] == "warehouse"
    assert hourly["columns"]["input_tokens"]["type"] == "BIGINT"
    assert (tmp_path / "docs" / "index.html").exists()


def _hold(path: Path, read_only: bool) -> subprocess.Popen:
    """A separate process holding a DuckDB connection on ``path`` until its stdin closes."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == '1'); "
            "print('open', flush=True); sys.stdin.read()",
            str(path),
            "1" if read_only else "0",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "open\n"
    return proc


# Publishing by slots (orchestration/defs/publishing/snapshot.py): the copy published two runs
# ago is brought up to date in place, chunk by chunk, unless a session still reads it.


def _grow(path: Path, table: str, rows: int) -> None:
    """A table of ``rows`` rows that barely compress (hashes), so the file grows with them."""
    with duckdb.connect(str(path)) as con:
        con.execute(
            f"create or replace table {table} as select md5(range::varchar) as x from range({rows})"
        )


def _published_rows(published: Path, table: str) -> int:
    with duckdb.connect(str(published), read_only=True) as con:
        return con.execute(f"select count(*) from {table}").fetchone()[0]


def _slot_numbers(published: Path) -> list[int]:
    return sorted(int(slot.name) for slot in (published.parent / ".slots").iterdir())


def test_the_copy_of_two_publishes_ago_is_updated_in_place_writing_only_what_changed(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    _grow(path, "big", 500_000)
    warehouse = Warehouse(path=str(path), analyst_dir=str(tmp_path / "analyst"))
    first = publish_snapshot(warehouse)
    second = publish_snapshot(warehouse)
    assert (first.method, second.method) == ("full copy", "full copy")
    assert first.written_bytes == second.written_bytes == path.stat().st_size

    _grow(path, "small", 10)  # a run's change: a table of a few blocks
    third = publish_snapshot(warehouse)
    published = first.path
    assert third.method == "in place"
    assert 0 < third.written_bytes < path.stat().st_size // 4
    # The published path links to slot 1 again, byte for byte the warehouse, and slot 2 (the
    # previous copy) is kept for the next publish.
    assert published.is_symlink() and published.resolve().parent.name == "1"
    assert published.read_bytes() == path.read_bytes()
    assert _slot_numbers(published) == [1, 2]
    assert (_published_rows(published, "big"), _published_rows(published, "small")) == (
        500_000,
        10,
    )
    assert third.size_bytes == path.stat().st_size


def test_a_slot_a_session_still_reads_is_never_written_and_is_removed_after_the_swap(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    _grow(path, "t", 100)
    warehouse = Warehouse(path=str(path), analyst_dir=str(tmp_path / "analyst"))
    published = publish_snapshot(warehouse).path  # slot 1
    analyst = Analyst(published, "select count(*) from t")  # reads slot 1
    try:
        assert analyst.ask() == [100]  # its session is open
        _grow(path, "t", 200)
        publish_snapshot(warehouse)  # slot 2
        _grow(path, "t", 300)
        # Slot 1 is held by the session: a new slot is copied whole, slot 1 is unlinked.
        third = publish_snapshot(warehouse)
        assert third.method == "full copy"
        assert published.resolve().parent.name == "3"
        assert _slot_numbers(published) == [2, 3]
        assert _published_rows(published, "t") == 300
        # The session still reads its consistent copy of the first publish.
        assert analyst.ask() == [100]
    finally:
        analyst.close()
    _grow(path, "t", 400)
    fourth = publish_snapshot(warehouse)  # slot 2, free again
    assert (fourth.method, published.resolve().parent.name) == ("in place", "2")
    assert _published_rows(published, "t") == 400


def test_a_slot_left_half_written_is_repaired_by_the_next_publish(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    _grow(path, "t", 1_000_000)
    warehouse = Warehouse(path=str(path), analyst_dir=str(tmp_path / "analyst"))
    published = publish_snapshot(warehouse).path
    publish_snapshot(warehouse)
    spare = published.parent / ".slots" / "1" / published.name
    spare.chmod(0o644)
    with open(spare, "r+b") as slot:  # a publish killed mid-way: garbage, a short file
        slot.seek(300_000)
        slot.write(b"\xff" * 500_000)
        slot.truncate(2_000_000)
    assert publish_snapshot(warehouse).method == "in place"
    assert published.read_bytes() == path.read_bytes()
    assert _published_rows(published, "t") == 1_000_000
