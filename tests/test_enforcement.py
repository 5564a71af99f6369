"""The enforcement file, end to end: real S3 (moto server), real hourly_usage_job runs, a real
warehouse, and the example gateway hook reading what the runs wrote.

cus_a's plan has a hard limit of 1500 tokens per billing period: hour 01 uses 1000 (absent
from the file after that run), hour 02 another 1000 (present after it, reached at 02:00).
cus_b's wallet holds 1.00 without overage: hour 01 costs it 2.00 (2000 output tokens at 1.00
per 1K), so it is out of credit from the first run on (credit 1.00 - 2.00 = -1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from examples.gateway_hook import EnforcementState, InvalidEnforcementFile, parse, s3_reader
from orchestration.definitions import build_defs
from orchestration.defs.resources import S3UsageBucket
from orchestration.runner import run_job_range
from orchestration.settings import setting
from tests import pipeline_data as data


def _price(price_id: str, meter: str, unit_price: str) -> dict:
    return {
        "price_id": price_id,
        "meter": meter,
        "selector": {"model": "gpt-4o"},
        "unit": "1K",
        "versions": [{"effective_from": "2026-01-01", "unit_price": unit_price}],
    }


PRICES = [_price("in", "uncached_input", "0"), _price("out", "output", "1.00")]
CATALOG = {
    "customers.yml": {"customers": [
        {"customer_id": "cus_a", "name": "A", "currency": "USD"},
        {"customer_id": "cus_b", "name": "B", "currency": "USD"},
    ]},
    "plans.yml": {"plans": [
        {"plan_id": "capped", "name": "Capped", "currency": "USD", "prices": PRICES,
         "limits": [
             {"limit_id": "tokens", "metric": "tokens", "max": 1500},
             {"limit_id": "chat-soft", "metric": "tokens", "max": 1000, "enforcement": "soft"},
         ]},
        {"plan_id": "prepaid", "name": "Prepaid", "currency": "USD",
         "prices": [_price("b-in", "uncached_input", "0"), _price("b-out", "output", "1.00")]},
    ]},
    "subscriptions.yml": {"subscriptions": [
        {"subscription_id": "sub_a", "customer_id": "cus_a", "plan_id": "capped",
         "start": "2026-01-01"},
        {"subscription_id": "sub_b", "customer_id": "cus_b", "plan_id": "prepaid",
         "start": "2026-01-01"},
    ]},
    "wallets.yml": {"wallets": [
        {"wallet_id": "wal_b", "customer_id": "cus_b", "currency": "USD", "allow_overage": False,
         "grants": [{"grant_id": "g", "kind": "purchased", "amount": "1.00",
                     "granted_at": "2026-10-01"}]},
    ]},
}  # fmt: skip
OBJECTS = {
    "dt=2026-10-05/hour=01/a.jsonl": data.jsonl(
        data.event("a1", "2026-10-05T01:10:00Z", input_tokens=500, output_tokens=500),
        data.event("b1", "2026-10-05T01:20:00Z", "cus_b", output_tokens=2000),
    ),
    "dt=2026-10-05/hour=02/a.jsonl": data.jsonl(
        data.event("a2", "2026-10-05T02:10:00Z", input_tokens=500, output_tokens=500),
    ),
}
HOUR_1, HOUR_2 = "2026-10-05-01:00", "2026-10-05-02:00"


@pytest.fixture
def pipeline(tmp_path: Path, s3_client, bucket, instance, monkeypatch):
    """Definitions on a fresh warehouse, with every PutObject the runs send counted."""
    directory = tmp_path / "catalog"
    directory.mkdir()
    for name, doc in CATALOG.items():
        (directory / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    card = Path(__file__).parent / "fixtures" / "catalog_e2e" / "provider_costs.csv"
    (directory / "provider_costs.csv").write_text(card.read_text())
    data.upload(s3_client, bucket, OBJECTS)
    puts: list[str] = []
    real_client = S3UsageBucket.client

    def counting_client(self):
        client = real_client(self)
        client.meta.events.register(
            "provide-client-params.s3.*",
            lambda params, model, **_: puts.append(f"{model.name} {params.get('Key', '')}"),
        )
        return client

    monkeypatch.setattr(S3UsageBucket, "client", counting_client)
    defs = build_defs(bucket, data.PREFIX, str(tmp_path / "warehouse.duckdb"), str(directory))
    assert run_job_range(defs, "catalog_job", None, None, instance).success
    return defs, puts


def _document(s3_client, bucket: str) -> dict:
    body = s3_client.get_object(Bucket=bucket, Key=setting("TOKENBILL_ENFORCEMENT_KEY"))
    return parse(body["Body"].read())


def test_the_file_lists_a_hard_limit_exactly_from_the_hour_that_reaches_it(
    pipeline, s3_client, bucket, instance
):
    defs, puts = pipeline
    key = setting("TOKENBILL_ENFORCEMENT_KEY")
    assert run_job_range(defs, "hourly_usage_job", HOUR_1, HOUR_1, instance).success
    # One PutObject of the whole body per run (no multipart upload, nothing else written).
    assert [p for p in puts if key in p] == [f"PutObject {key}"]
    assert not [p for p in puts if "Multipart" in p]
    first = _document(s3_client, bucket)
    out_of_credit = {
        "customer_id": "cus_b",
        "reason": "out_of_credit",
        "wallet_id": "wal_b",
        "currency": "USD",
        "credit": "-1",
    }
    assert first["as_of"] == "2026-10-05T02:00:00Z"
    assert first["count"] == 1
    assert first["blocked"] == [out_of_credit]  # cus_a's 1000 tokens are under its 1500

    assert run_job_range(defs, "hourly_usage_job", HOUR_2, HOUR_2, instance).success
    assert [p for p in puts if key in p] == [f"PutObject {key}"] * 2
    second = _document(s3_client, bucket)
    assert second["as_of"] == "2026-10-05T03:00:00Z"
    assert second["count"] == 2
    assert second["blocked"] == [
        {
            "customer_id": "cus_a",
            "reason": "hard_limit",
            "subscription_id": "sub_a",
            "limit_id": "tokens",
            "metric": "tokens",
            "model": None,
            "feature": None,
            "max": "1500",
            "used": "2000",
            "billing_period_start": "2026-10-01T00:00:00Z",
            "billing_period_end": "2026-11-01T00:00:00Z",
            "reached_hour": "2026-10-05T02:00:00Z",
        },
        out_of_credit,
    ]  # the soft limit (1000 tokens, reached at 01:00) is not enforced

    # The example gateway hook reads the same object and blocks exactly these customers.
    state = EnforcementState(s3_reader(bucket, key, s3_client))
    assert state.refresh() and state.as_of == "2026-10-05T03:00:00Z"
    assert not state.check("cus_a", model="gpt-4o").allowed
    assert (
        state.check("cus_a", model="gpt-4o").message
        == "blocked: tokens limit tokens reached (2000/1500)"
    )
    assert state.check("cus_b").message == "blocked: prepaid credit exhausted (wallet wal_b)"
    assert state.check("cus_c").allowed


def test_the_hook_rejects_a_truncated_or_tampered_body_and_keeps_the_last_good_state():
    blocked = [{"customer_id": "cus_a", "reason": "out_of_credit", "wallet_id": "w",
                "currency": "USD", "credit": "0"}]  # fmt: skip
    from orchestration.defs.enforcement.state import SCHEMA, checksum

    good = {"schema": SCHEMA, "as_of": "2026-10-05T03:00:00Z", "count": 1,
            "checksum": checksum(blocked), "blocked": blocked}  # fmt: skip
    body = json.dumps(good).encode()
    bodies = [body, body[: len(body) // 2], json.dumps({**good, "count": 0}).encode(),
              json.dumps({**good, "blocked": []}).encode()]  # fmt: skip
    state = EnforcementState(lambda: bodies.pop(0))
    assert state.refresh()
    for _ in range(3):
        assert not state.refresh()
        assert not state.check("cus_a").allowed  # still the last good state
    for bad in [b"{", json.dumps({**good, "count": 0}).encode()]:
        with pytest.raises(InvalidEnforcementFile):
            parse(bad)
    assert EnforcementState(lambda: b"", fail_open=False).check("cus_a").allowed is False
