"""The benchmark's S3 side, in a child process: moto's server plus the generated month.

Run by :mod:`bench.run`, never by hand. Keeping the server (and the generator) out of the
measured process means the pipeline's peak memory and CPU are its own, as against a real S3
endpoint: moto holds every object in memory and serves requests on Python threads.

Protocol: prints one JSON line (endpoint, generation seconds, manifest, objects, bytes) on
stdout once the month is uploaded, then serves until its stdin is closed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.s3")
    parser.add_argument("--month", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--shapes", choices=("mixed", "canonical"), default="mixed")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--cache", required=True, help="directory of the generated objects")
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--hot-hours", type=int, default=0)
    parser.add_argument("--hot-hour-events", type=int, default=0)
    args = parser.parse_args(argv)

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)

    import boto3

    from orchestration.demo import start_s3_server
    from tools.generator import GeneratedObject, generate_month, upload

    server, endpoint = start_s3_server()
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket=args.bucket)
        cache = Path(args.cache)
        manifest_file = cache / "manifest.json"
        started = time.monotonic()
        if args.skip_generate:
            if not manifest_file.exists():
                raise SystemExit(f"--skip-generate: no generated month in {cache}; run without")
            objects: Iterator[GeneratedObject] = (
                GeneratedObject(str(p.relative_to(cache / "objects")), spool=p, owned=False)
                for p in sorted((cache / "objects").rglob("*"))
                if p.is_file()
            )
            stats = upload(client, args.bucket, args.prefix, objects)
            manifest = json.loads(manifest_file.read_text())
            mode = "uploaded from cache"
        else:
            manifest_file.unlink(missing_ok=True)
            shutil.rmtree(cache / "objects", ignore_errors=True)
            month = generate_month(
                args.month,
                args.events,
                args.seed,
                args.shapes,
                hot_hours=args.hot_hours,
                hot_hour_events=args.hot_hour_events,
                # A hot hour renders in one pass (~4 KB a row: ~8 GB for 2M events): one
                # process, so two hot hours never render at once.
                workers=1 if args.hot_hours else (os.cpu_count() or 1),
            )
            stats = upload(client, args.bucket, args.prefix, _kept(month, cache / "objects"))
            manifest = month.manifest
            manifest_file.write_text(json.dumps(manifest))
            mode = "generated and uploaded"
        seconds = time.monotonic() - started
        print(
            json.dumps(
                {
                    "endpoint": endpoint,
                    "seconds": seconds,
                    "mode": mode,
                    "manifest": manifest,
                    **stats,
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # serve until the parent closes our stdin (or exits)
    finally:
        server.stop()
    return 0


def _kept(objects, directory: Path):
    """Pass objects through, writing each under ``directory`` (for ``--skip-generate``)."""
    for obj in objects:
        path = directory / obj.key
        path.parent.mkdir(parents=True, exist_ok=True)
        obj.save(path)
        yield obj


if __name__ == "__main__":
    sys.exit(main())
