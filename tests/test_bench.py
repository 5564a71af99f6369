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
