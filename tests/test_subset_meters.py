"""The TTL and modality subsets (issue #14) reach the token-usage marts and can be priced.

Native lines (an OpenAI Realtime response with audio, an Anthropic response with 1-hour cache
writes) are ingested for real (routed and landed), then a real ``dbt build`` of the catalog
and hourly models rates them with a plan that charges audio input and 1-hour cache writes on
top of the token meters. Expected amounts are computed by hand below.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import duckdb
import pytest
import yaml
from dagster import TimeWindow

from orchestration.defs.ingestion.landing import ensure_raw_schema, land_batch
from orchestration.defs.ingestion.parsing import HourInput, S3Object, route_hours
from orchestration.defs.rating.catalog import (
    catalog_tables,
    load_catalog,
    read_provider_costs,
    write_catalog,
)
from orchestration.defs.wallets.catalog import wallet_tables
from tests.dbt_support import dbt_build, query

HOUR = datetime(2026, 10, 5, 7, tzinfo=UTC)
CARD = (
    "provider,model,effective_from,effective_to,input_per_token,output_per_token,"
    "cache_read_per_token,cache_write_per_token,reasoning_per_token,input_above_200k_per_token,"
    "output_above_200k_per_token,cache_read_above_200k_per_token,"
    "cache_write_above_200k_per_token,source\n"
    "openai,gpt-realtime,2026-01-01,,0.000004,0.000016,0.0000004,,,,,,,test\n"
    "anthropic,claude-opus-4-1-20250805,2026-01-01,,0.000015,0.000075,0.0000015,"
    "0.00001875,,,,,,test\n"
)
LINES = [
    # OpenAI Realtime: input 1200 (cached 400, audio 900, image 100), output 600 (audio 450).
    '{"event_id":"rt-1","timestamp":"2026-10-05T07:15:00Z","customer_id":"cus_a",'
    '"provider":"openai","model":"gpt-realtime","response":{"object":"realtime.response",'
    '"usage":{"total_tokens":1800,"input_tokens":1200,"output_tokens":600,'
    '"input_token_details":{"text_tokens":200,"audio_tokens":900,"image_tokens":100,'
    '"cached_tokens":400},"output_token_details":{"text_tokens":150,"audio_tokens":450}}}}',
    # Anthropic: input 100 + 3000 cache writes (1000 for 5 minutes, 2000 for an hour).
    '{"event_id":"msg-1","timestamp":"2026-10-05T07:17:00Z","customer_id":"cus_a",'
    '"provider":"anthropic","response":{"model":"claude-opus-4-1-20250805","usage":'
    '{"input_tokens":100,"cache_creation_input_tokens":3000,"cache_read_input_tokens":0,'
    '"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":2000},'
    '"output_tokens":2000}}}',
]


def price(price_id: str, meter: str, unit_price: str) -> dict:
    return {
        "price_id": price_id,
        "meter": meter,
        "selector": {"model": "*"},
        "versions": [{"effective_from": "2026-01-01", "unit_price": unit_price}],
    }


PLAN = {
    "plan_id": "modal",
    "name": "modal",
    "currency": "USD",
    "prices": [
        price("in", "uncached_input", "0.001"),
        price("cached", "cached_input", "0.0001"),
        price("write", "cache_write", "0.002"),
        price("out", "output", "0.01"),
        # Surcharges on subsets already metered above.
        price("audio-in", "audio_input", "0.005"),
        price("write-1h", "cache_write_1h", "0.0015"),
    ],
}


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    root = tmp_path_factory.mktemp("subset_meters")
    catalog_dir = root / "catalog"
    catalog_dir.mkdir()
    documents = {
        "customers.yml": {"customers": [{"customer_id": "cus_a", "name": "A", "currency": "USD"}]},
        "plans.yml": {"plans": [PLAN]},
        "subscriptions.yml": {
            "subscriptions": [
                {
                    "subscription_id": "sub_a",
                    "customer_id": "cus_a",
                    "plan_id": "modal",
                    "start": "2026-01-01",
                    "billing_anchor_day": 1,
                }
            ]
        },  # fmt: skip
        "overrides.yml": {"overrides": []},
    }
    for name, doc in documents.items():
        (catalog_dir / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    (catalog_dir / "provider_costs.csv").write_text(CARD)
    body = "\n".join(LINES).encode()
    batch = route_hours([HourInput(HOUR, [S3Object("usage/x.jsonl", "e", len(body))], [body])])
    assert batch.valid.height == 2, batch.quarantine.to_dicts()
    warehouse = str(root / "warehouse.duckdb")
    with duckdb.connect(warehouse) as con:
        ensure_raw_schema(con)
        land_batch(con, batch)
        tables = catalog_tables(
            load_catalog(catalog_dir), read_provider_costs(catalog_dir / "provider_costs.csv")
        )
        write_catalog(con, tables)
        write_catalog(con, wallet_tables([]))
    window = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    result = dbt_build(warehouse, root / "target", window, "tag:catalog", "tag:hourly")
    assert result.returncode == 0, result.stdout[-3000:]
    return warehouse


def test_the_hourly_mart_carries_the_subsets(rated):
    assert query(
        rated,
        "select model, input_tokens, cache_write_tokens, cache_write_5m_tokens, "
        "cache_write_1h_tokens, audio_input_tokens, image_input_tokens, audio_output_tokens, "
        "image_output_tokens from marts.fct_token_usage_hourly order by model",
    ) == [
        ("claude-opus-4-1-20250805", 3_100, 3_000, 1_000, 2_000, 0, 0, 0, 0),
        ("gpt-realtime", 1_200, 0, 0, 0, 900, 100, 450, 0),
    ]


def test_subset_meters_are_charged_on_top_of_their_parents(rated):
    rows = query(
        rated,
        "select model, meter, quantity, amount from marts.fct_rated_charges_hourly "
        "order by model, meter",
    )
    assert rows == [
        ("claude-opus-4-1-20250805", "cache_write", 3_000, Decimal("6.000")),
        ("claude-opus-4-1-20250805", "cache_write_1h", 2_000, Decimal("3.0000")),
        ("claude-opus-4-1-20250805", "output", 2_000, Decimal("20.00")),
        ("claude-opus-4-1-20250805", "uncached_input", 100, Decimal("0.100")),
        ("gpt-realtime", "audio_input", 900, Decimal("4.500")),
        ("gpt-realtime", "cached_input", 400, Decimal("0.0400")),
        ("gpt-realtime", "output", 600, Decimal("6.00")),
        ("gpt-realtime", "uncached_input", 800, Decimal("0.800")),
    ]
    # The subset meters' provider cost is inside their parents' (0), never unknown.
    assert query(
        rated,
        "select meter, provider_cost from marts.fct_rated_charges_hourly "
        "where meter in ('audio_input', 'cache_write_1h') order by meter",
    ) == [("audio_input", Decimal(0)), ("cache_write_1h", Decimal(0))]
