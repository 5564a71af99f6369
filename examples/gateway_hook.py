"""A gateway hook that enforces tokenbill's enforcement file (plain Python, boto3 only).

tokenbill publishes, after every hourly run, one JSON object per environment listing the
customers to block (``orchestration/defs/enforcement/state.py`` documents the format). A
gateway keeps the last good copy in memory, refreshes it every minute or so, and asks it
before each model call::

    from examples.gateway_hook import EnforcementState, s3_reader

    state = EnforcementState(s3_reader("tokenbill-usage", "enforcement/production.json"))
    state.refresh()                      # at start, then periodically (a timer, a thread)
    decision = state.check("cus_0042", model="gpt-4o", feature="chat")
    if not decision.allowed:
        return 429, decision.message     # or 402 for out_of_credit

A body that fails its ``count`` or ``checksum`` (never expected: the file is replaced by one
PUT, but a proxy or a cache could truncate it) is rejected and the previous state is kept.
Before the first good read the hook allows every call (``fail_open=True``) or blocks every
call (``fail_open=False``): a billing outage should rarely stop production traffic.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

SCHEMA = "tokenbill.enforcement/v1"


class InvalidEnforcementFile(ValueError):
    """The body is not a complete enforcement file (bad JSON, count or checksum)."""


def parse(body: bytes) -> dict:
    """The enforcement document of ``body``, verified; raise InvalidEnforcementFile."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise InvalidEnforcementFile(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise InvalidEnforcementFile(f"not a {SCHEMA} document")
    blocked = document.get("blocked")
    if not isinstance(blocked, list) or document.get("count") != len(blocked):
        raise InvalidEnforcementFile("count does not match the blocked entries")
    canonical = json.dumps(blocked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if document.get("checksum") != "sha256:" + hashlib.sha256(canonical.encode()).hexdigest():
        raise InvalidEnforcementFile("checksum does not match the blocked entries")
    return document


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: list[dict] = field(default_factory=list)

    @property
    def message(self) -> str:
        if self.allowed:
            return "allowed"
        parts = []
        for r in self.reasons:
            if r["reason"] == "out_of_credit":
                parts.append(f"prepaid credit exhausted (wallet {r['wallet_id']})")
            else:
                parts.append(
                    f"{r['metric']} limit {r['limit_id']} reached ({r['used']}/{r['max']})"
                )
        return "blocked: " + "; ".join(parts)


def _applies(entry: dict, model: str | None, feature: str | None) -> bool:
    """Whether a blocked entry covers a call: out of credit covers every call; a hard limit
    covers the calls of its model (pattern with *) and feature, or all where they are null."""
    if entry["reason"] != "hard_limit":
        return True
    if entry.get("model") is not None and (
        model is None or not fnmatch.fnmatchcase(model, entry["model"])
    ):
        return False
    return entry.get("feature") is None or entry["feature"] == feature


class EnforcementState:
    """The last good enforcement file, asked before each call."""

    def __init__(self, read: Callable[[], bytes], fail_open: bool = True):
        self._read = read
        self._fail_open = fail_open
        self.document: dict | None = None
        self._by_customer: dict[str, list[dict]] = {}

    def refresh(self) -> bool:
        """Read the file again; keep the previous state if it is unreadable. True if updated."""
        try:
            document = parse(self._read())
        except (InvalidEnforcementFile, OSError):
            return False
        by_customer: dict[str, list[dict]] = {}
        for entry in document["blocked"]:
            by_customer.setdefault(entry["customer_id"], []).append(entry)
        self.document, self._by_customer = document, by_customer
        return True

    @property
    def as_of(self) -> str | None:
        return self.document["as_of"] if self.document else None

    def check(self, customer_id: str, model: str | None = None, feature: str | None = None):
        if self.document is None:
            return Decision(self._fail_open, [] if self._fail_open else [{"reason": "no_state"}])
        reasons = [e for e in self._by_customer.get(customer_id, []) if _applies(e, model, feature)]
        return Decision(not reasons, reasons)


def s3_reader(bucket: str, key: str, client=None) -> Callable[[], bytes]:
    """A reader of s3://bucket/key (boto3's default credentials and endpoint)."""
    import boto3

    s3 = client or boto3.client("s3")
    return lambda: s3.get_object(Bucket=bucket, Key=key)["Body"].read()
