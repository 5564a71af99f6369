"""``python -m tools.generator``: write one month of demo usage events to S3 or a local folder.

    python -m tools.generator --month 2026-10 --events 200000 --seed 7 --bucket B --prefix usage
    python -m tools.generator --month 2026-10 --out-dir /tmp/usage --manifest /tmp/manifest.json
    python -m tools.generator --month 2026-10 --shapes canonical ...   (no producer-native shapes)
    python -m tools.generator ... --hot-hours 3 --hot-hour-events 2000000 --processes 2

The S3 endpoint comes from ``--endpoint-url`` or boto3's usual configuration
(``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, credential chain). The bucket is created if
it does not exist. With ``--out-dir`` the objects are written to ``DIR/<prefix>/<key>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tools.generator.generate import generate_month, upload, write_local


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.generator",
        description="Generate one month of deterministic demo LLM usage events.",
    )
    p.add_argument("--month", required=True, help="month to generate, e.g. 2026-10")
    p.add_argument("--events", type=int, default=200_000, help="valid unique events (exact)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--shapes",
        choices=("mixed", "canonical"),
        default="mixed",
        help="mixed (default): ~60%% of the events in producers' own shapes (provider "
        "responses, OTLP spans, LiteLLM logs, CloudEvents); canonical: every event canonical",
    )
    p.add_argument("--bucket", help="S3 bucket (created if missing); required without --out-dir")
    p.add_argument("--prefix", default="usage", help="key prefix (default: usage)")
    p.add_argument("--endpoint-url", help="S3 endpoint, e.g. http://127.0.0.1:5000")
    p.add_argument("--out-dir", help="write files under this folder instead of uploading")
    p.add_argument("--manifest", help="also write the manifest as JSON to this path")
    p.add_argument("--workers", type=int, default=8, help="upload threads (default: 8)")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="processes rendering hours (default: 1; same bytes whatever the number)",
    )
    p.add_argument(
        "--hot-hours",
        type=int,
        default=0,
        help="hours holding exactly --hot-hour-events valid events each, in one .jsonl.gz "
        "object per hour (part of --events)",
    )
    p.add_argument("--hot-hour-events", type=int, default=0, help="valid events per hot hour")
    return p


def _s3_client(endpoint_url: str | None):
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client("s3", endpoint_url=endpoint_url)
    return client, ClientError


def _ensure_bucket(client, client_error, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
        return
    except client_error as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
    region = client.meta.region_name
    if region and region != "us-east-1":
        client.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
        )
    else:
        client.create_bucket(Bucket=bucket)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.out_dir and not args.bucket:
        _parser().error("give --bucket (upload to S3) or --out-dir (write files)")
    started = time.perf_counter()
    if args.hot_hours and not args.hot_hour_events:
        _parser().error("--hot-hours needs --hot-hour-events (valid events per hot hour)")
    try:
        month = generate_month(
            args.month,
            args.events,
            args.seed,
            args.shapes,
            hot_hours=args.hot_hours,
            hot_hour_events=args.hot_hour_events,
            workers=args.processes,
        )
    except ValueError as exc:
        _parser().error(str(exc))
    prefix = args.prefix.strip("/")
    if args.out_dir:
        target = str(Path(args.out_dir) / prefix) if prefix else args.out_dir
        written = write_local(target, month)
    else:
        client, client_error = _s3_client(args.endpoint_url)
        _ensure_bucket(client, client_error, args.bucket)
        target = f"s3://{args.bucket}/{prefix}/" if prefix else f"s3://{args.bucket}/"
        written = upload(client, args.bucket, prefix, month, max_workers=args.workers)
    seconds = time.perf_counter() - started
    manifest = month.manifest
    if args.manifest:
        Path(args.manifest).parent.mkdir(parents=True, exist_ok=True)
        Path(args.manifest).write_text(json.dumps(manifest, indent=2) + "\n")
    lines = manifest["lines"]
    print(
        f"{args.month}: {written['objects']} objects, {written['bytes']:,} bytes -> {target} "
        f"in {seconds:.1f}s\n"
        f"lines {lines['total']:,} = {lines['valid_unique']:,} valid unique "
        f"+ {lines['duplicate']:,} duplicate + {lines['malformed']:,} malformed"
    )
    summary = {k: manifest[k] for k in ("lines", "malformed_by_reason", "objects", "tokens")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
