"""A small hand-made month of usage, whose exact aggregates the end-to-end tests assert.

Every number the tests expect is derived by hand from the lines below (see comments).
"""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime

import polars as pl

PREFIX = "usage"
PERIOD_START = datetime(2026, 10, 5, tzinfo=UTC)
PERIOD_END = datetime(2026, 10, 7, tzinfo=UTC)


def event(event_id: str, ts: str, customer: str = "cus_a", **fields) -> dict:
    base = {
        "event_id": event_id,
        "timestamp": ts,
        "customer_id": customer,
        "subscription_id": f"sub_{customer[-1]}",
        "plan": "pro",
        "feature": "chat",
        "provider": "openai",
        "model": "gpt-4o",
        "environment": "production",
        "input_tokens": 0,
        "output_tokens": 0,
    }
    base.update(fields)
    return base


def jsonl(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


# Hour 2026-10-05 07: two objects.
HOUR7_A = jsonl(
    # valid: cus_a chat gpt-4o, 1000 in (200 cached), 100 out
    event(
        "e1", "2026-10-05T07:01:00Z", input_tokens=1000, cached_input_tokens=200, output_tokens=100
    ),
    # valid: counts as numeric strings, 100 of the 500 input written to cache
    event(
        "e2",
        "2026-10-05T07:02:00.250Z",
        input_tokens="500",
        cache_write_tokens="100",
        output_tokens="50",
    ),
    # duplicate of e1 (exact resend)
    event(
        "e1", "2026-10-05T07:01:00Z", input_tokens=1000, cached_input_tokens=200, output_tokens=100
    ),
    # invalid JSON
    '{"event_id": "e-broken", "timestamp": ',
    # valid: cus_b, Anthropic, offset timestamp 09:30+02:00 = 07:30Z, unknown field kept
    event(
        "e3",
        "2026-10-05T09:30:00+02:00",
        customer="cus_b",
        provider="anthropic",
        model="claude-sonnet-4-5",
        feature="agent",
        input_tokens=300,
        output_tokens=30,
        reasoning_tokens=10,
        sdk_version="1.2.3",
        metadata={"team": "search"},
    ),
    # negative count
    event("e4", "2026-10-05T07:04:00Z", input_tokens=-5, output_tokens=1),
)
HOUR7_B = gzip.compress(
    jsonl(
        # valid: cus_b failed attempt with no usage, then its retry
        event(
            "e5",
            "2026-10-05T07:10:00Z",
            customer="cus_b",
            provider="anthropic",
            model="claude-sonnet-4-5",
            feature="agent",
            status="failed",
            request_group_id="rg1",
        ),
        event(
            "e6",
            "2026-10-05T07:10:05Z",
            customer="cus_b",
            provider="anthropic",
            model="claude-sonnet-4-5",
            feature="agent",
            attempt=2,
            request_group_id="rg1",
            input_tokens=700,
            cached_input_tokens=300,
            cache_write_tokens=100,
            output_tokens=70,
        ),
        # subset invariant broken: 90 cached + 20 written > 100 input
        event(
            "e7",
            "2026-10-05T07:11:00Z",
            input_tokens=100,
            cached_input_tokens=90,
            cache_write_tokens=20,
            output_tokens=1,
        ),
        # timestamp in hour 08: outside the object's hour
        event("e8", "2026-10-05T08:00:00Z", input_tokens=1, output_tokens=1),
    ),
    mtime=0,
)


def parquet_body() -> bytes:
    frame = pl.DataFrame(
        {
            "event_id": ["e9", "e10"],
            "timestamp": ["2026-10-05T08:15:00Z", "2026-10-05T08:45:00Z"],
            "customer_id": ["cus_a", "cus_a"],
            "subscription_id": ["sub_a", "sub_a"],
            "plan": ["pro", "pro"],
            "feature": ["chat", "code-assist"],
            "provider": ["openai", "openai"],
            "model": ["gpt-4o", "gpt-4o-mini"],
            "environment": ["production", "production"],
            "input_tokens": [2000, 4000],
            "cached_input_tokens": [1000, None],
            "output_tokens": [200, 400],
            "reasoning_tokens": [None, None],
        }
    )
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


# Hour 2026-10-05 08: a Parquet object, a corrupt gzip, an unsupported name.
# Hour 2026-10-06 00: one valid event for cus_a.
OBJECTS = {
    "dt=2026-10-05/hour=07/a.jsonl": HOUR7_A,
    "dt=2026-10-05/hour=07/b.jsonl.gz": HOUR7_B,
    "dt=2026-10-05/hour=08/c.parquet": parquet_body(),
    "dt=2026-10-05/hour=08/corrupt.jsonl.gz": b"this is not gzip",
    "dt=2026-10-05/hour=08/readme.txt": b"not an event file",
    "dt=2026-10-06/hour=00/d.jsonl": jsonl(
        event("e11", "2026-10-06T00:30:00Z", input_tokens=100, output_tokens=10)
    ),
}

# A late object for hour 07, added after the first run.
LATE_KEY = "dt=2026-10-05/hour=07/late.jsonl"
LATE_BODY = jsonl(event("e12", "2026-10-05T07:59:59Z", input_tokens=40, output_tokens=4))


def upload(client, bucket: str, objects: dict[str, bytes] = OBJECTS) -> None:
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=body)
