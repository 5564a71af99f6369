"""The benchmark's S3 side (bench.s3): a generated month served by moto, bodies in memory or
on disk, and the work dir's disk check (bench.run). The benchmark itself is not run here."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import boto3
import pytest

from bench import run
from tools.generator import generation_manifest


def _args(**overrides) -> argparse.Namespace:
    values = dict(
        month="2026-10",
        events=3000,
        seed=7,
        shapes="mixed",
        skip_generate=False,
        hot_hours=1,
        hot_hour_events=900,
        s3_store="disk",
        no_keep=False,
    )
    return argparse.Namespace(**(values | overrides))


def _files_open_under(pid: int, directory: Path) -> int:
    """Open descriptors of a process on files in ``directory`` (unlinked temporary files
    included: moto's bodies are anonymous files there)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fd_dir.iterdir() if os.readlink(fd).startswith(f"{directory}/"))


def _listed(endpoint: str) -> dict[str, int]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=run.BUCKET):
        out |= {o["Key"]: o["Size"] for o in page.get("Contents", [])}
    return out


@pytest.mark.parametrize("store", ["disk", "memory"])
def test_the_s3_child_serves_the_month_with_bodies_where_asked(store, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "bench")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bench")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    args = _args(s3_store=store)
    with run.s3_child(args, tmp_path) as s3:
        expected = generation_manifest(
            args.month, args.events, args.seed, args.shapes, hot_hours=1, hot_hour_events=900
        )
        assert s3["manifest"] == expected
        listed = _listed(s3["endpoint"])
        assert len(listed) == s3["objects"] == expected["objects"]["total"]
        assert sum(listed.values()) == s3["bytes"]
        assert s3["store"] == store and s3["rss_server"] > 0 and s3["maxrss_renderer"] > 0
        on_disk = _files_open_under(s3["pid"], tmp_path / "s3")
        # disk: every body is a file of the store (moto's buffer is 1 byte); memory: none is
        # (every object of this month is below moto's 5 MiB buffer)
        assert on_disk >= len(listed) if store == "disk" else on_disk == 0
    kept = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert len(kept) == len(listed) + 1  # the objects and the manifest, for --skip-generate


def test_the_disk_check_says_what_is_needed_and_what_to_do(tmp_path):
    assert run.disk_shortfall(_args(events=1000), tmp_path) is None
    message = run.disk_shortfall(_args(events=10**12, shapes="canonical"), tmp_path)
    assert message.startswith(
        f"bench: 1,000,000,000,000 events need ~715,000.0 GB free on the disk of {tmp_path} ("
    )
    assert "the kept objects ~100,000.0 GB" in message
    assert "the S3 server's disk store ~100,000.0 GB" in message
    assert "the warehouse and its analysts' copy ~450,000.0 GB" in message
    assert message.endswith("--workdir on a larger disk, or --no-keep (no copy of the objects)")
    lean = run.disk_shortfall(_args(events=10**12, no_keep=True, s3_store="memory"), tmp_path)
    assert "kept objects" not in lean and "disk store" not in lean


def test_the_sampler_counts_the_cpu_of_a_grandchild_nobody_waits_for():
    """A Spark JVM is a grandchild (dbt's, or pyspark's in the asset's session): the sampler
    adds the CPU of every descendant it sees, which RUSAGE_CHILDREN misses."""
    import subprocess
    import sys

    burn = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    # sh waits for python, but this process never waits for sh's child: a grandchild. It
    # is running when the sampler starts (which samples the tree at once).
    child = subprocess.Popen(["sh", "-c", f"{sys.executable} -c '{burn}'; sleep 0.2"])
    try:
        with run.RssSampler(interval=0.02) as sampler:
            assert child.wait(timeout=60) == 0
    finally:
        child.kill()
    assert sum(sampler.cpu_descendants.values()) >= 0.4
    assert run.cpu_of(os.getpid()) > 0
    assert run.cpu_of(2**22 + 1) == 0.0  # no such process


def test_a_spark_backfill_is_recorded_as_its_own_section(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "BENCHMARKS_MD", tmp_path / "BENCHMARKS.md")
    runs = [
        {"job": "catalog_job", "success": True, "wall": 20.0, "overhead": 2.0, "steps": {}},
        {
            "job": "hourly_usage_job",
            "success": False,
            "wall": 180.0,
            "overhead": 30.0,
            "steps": {"raw_usage_events": 100.0, "dbt_hourly": 50.0},
        },
    ]
    results = {
        "args": {"events": 200_000, "month": "2026-10", "seed": 7, "shapes": "mixed"},
        "machine": {
            "nproc": 2,
            "cpu": "cpu",
            "memory_gib": 8.0,
            "python": "3.11.9",
            "loadavg_at_start": (2.0, 1.5, 1.0),
            "loadavg_at_end": (3.0, 2.5, 2.0),
        },
        "generate": {"seconds": 10.0, "objects": 1_500, "bytes": 30e6},
        "spark_master": "local[2]",
        "backfill": {
            "seconds": 200.0,
            "runs": runs,
            "stages": {"ingestion": 100.0, "dbt": 100.0},
            "rss_peak_run": 3 * 2**30,
            "rss_peak_backfill": 2**30,
            "cpu_self": 100.0,
            "cpu_children": 10.0,
            "cpu_descendants_sampled": 200.0,
            "checks": "matches the generator's manifest",
        },
    }
    monkeypatch.setattr(run.os, "cpu_count", lambda: 2)
    run.record_spark(results)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "seed 7, mixed shapes, **Spark engine** (`--engine spark`, master local[2])" in text
    assert "Load average (1/5/15 min) at start 2.0/1.5/1.0, at end 3.0/2.5/2.0" in text
    assert "| events/s | 1,000 | >= 33,333 (10M < 5 min) | **missed** |" in text
    assert (
        "| run hourly_usage_job (wall / run overhead) | 180.0 s / 30.0 s **FAILED** |  |  |" in text
    )
    assert "| stage: ingestion | 100.0 s (50%) |  |  |" in text
    assert "| peak RSS of the run: this process + dbt + Spark JVMs (this process alone) | " in text
    assert "3,072 MiB (1,024 MiB) | <= 2 GiB at 10M | **missed** at 200,000 |" in text
    # (100 + 200) CPU s / 200k events = 1,500 us; 200 s x 2 cores / 200k = 2,000 core-us
    assert "| cost per event: CPU / wall x cores | 1,500 us / 2,000 core-us |  |  |" in text
