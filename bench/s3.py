"""The benchmark's S3 side, in a child process: moto's server plus the generated month.

Run by :mod:`bench.run`, never by hand. Keeping the server (and the generator) out of the
measured process means the pipeline's peak memory and CPU are its own, as against a real S3
endpoint: moto serves requests on Python threads and keeps each object's body in a
``SpooledTemporaryFile`` of ``MOTO_S3_DEFAULT_KEY_BUFFER_SIZE`` bytes (5 MiB by default): the
objects of a 10M month (~830 KB each) are all in its memory (1 GB of objects took 1.1 GB of
RSS, measured 2026-12-03), a 100M month's ~10 GB would not fit beside the pipeline.
``--store disk`` sets the buffer to 1 byte: every body is a file in ``--store-dir`` (one open
descriptor per object; 4 GB of objects took 276 MB of RSS).

The month is rendered in ``os.cpu_count()`` processes (hot hours too: an hour is rendered in
windows, in bounded memory); bodies above the generator's SPOOL_BYTES are written to files in
``--store-dir`` as well.

Protocol: prints one JSON line (endpoint, generation seconds, manifest, objects, bytes, the
generator's and this process's peak RSS) on stdout once the month is uploaded, then serves
until its stdin is closed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
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
    parser.add_argument("--store", choices=("memory", "disk"), default="memory")
    parser.add_argument("--store-dir", help="S3 bodies (--store disk) and spooled objects")
    parser.add_argument("--no-keep", action="store_true", help="keep no copy for --skip-generate")
    args = parser.parse_args(argv)
    if args.store_dir:  # before anything asks tempfile for its directory
        shutil.rmtree(args.store_dir, ignore_errors=True)
        Path(args.store_dir).mkdir(parents=True)
        os.environ["TMPDIR"] = args.store_dir
    if args.store == "disk":
        os.environ["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = "1"  # every body rolls over to a file

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
                workers=os.cpu_count() or 1,
            )
            objects = month if args.no_keep else _kept(month, cache / "objects")
            stats = upload(client, args.bucket, args.prefix, objects)
            manifest = month.manifest
            if not args.no_keep:  # the manifest marks a complete copy for --skip-generate
                manifest_file.write_text(json.dumps(manifest))
            mode = "generated and uploaded"
        seconds = time.monotonic() - started
        generator = {  # the generator's processes are gone; this process serves S3 from now
            "rss_server": vm_rss(),
            "maxrss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "maxrss_renderer": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
            "store": args.store,
        }
        print(
            json.dumps(
                {
                    "endpoint": endpoint,
                    "seconds": seconds,
                    "mode": mode,
                    "manifest": manifest,
                    **stats,
                    **generator,
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # serve until the parent closes our stdin (or exits)
    finally:
        server.stop()
    return 0


def vm_rss() -> int:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(found.group(1)) * 1024 if found else 0


def _kept(objects, directory: Path):
    """Pass objects through, writing each under ``directory`` (for ``--skip-generate``)."""
    for obj in objects:
        path = directory / obj.key
        path.parent.mkdir(parents=True, exist_ok=True)
        obj.save(path)
        yield obj


if __name__ == "__main__":
    sys.exit(main())
