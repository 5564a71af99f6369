"""Producer shapes (issue #14): captured-shape fixtures land as their exact canonical events;
ambiguous, unrecognised and unreported lines are quarantined; records reconcile per hour."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from contracts.usage_event import SHAPE_REASONS
from orchestration.defs.ingestion.landing import ensure_raw_schema, land_batch
from orchestration.defs.ingestion.parsing import HourInput, S3Object, route_hours

HOUR = datetime(2026, 10, 5, 7, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures" / "shapes"
SHAPE_FILES = sorted(
    p.name.removesuffix(".jsonl")
    for p in FIXTURES.glob("*.jsonl")
    if not p.name.endswith(".expected.jsonl")
)
LINEAGE = ("partition_hour", "source_key", "line_number")


def route(objects: dict[str, bytes], hour: datetime = HOUR):
    keys = [S3Object(k, "etag", len(v)) for k, v in objects.items()]
    return route_hours([HourInput(hour, keys, list(objects.values()))])


def landed(batch) -> list[dict]:
    """Valid rows as the expected files write them: nulls and lineage left out, timestamps
    ISO, metadata parsed."""
    rows = []
    for row in batch.valid.to_dicts():
        out = {}
        for key, value in row.items():
            if value is None or key in LINEAGE:
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            if key == "metadata":
                value = json.loads(value)
            out[key] = value
        rows.append(out)
    return rows


def audit_of(batch) -> dict:
    (row,) = batch.audit().drop("partition_hour").to_dicts()
    return row


def quarantined(batch) -> list[tuple]:
    return batch.quarantine.select(
        "line_number", "event_id", "reason_codes", "reason_detail", "source_format"
    ).rows()


def test_every_shape_has_a_fixture():
    assert SHAPE_FILES == [
        "anthropic_messages",
        "bedrock_converse",
        "canonical",
        "cloudevents",
        "gemini",
        "litellm",
        "openai_chat",
        "openai_realtime",
        "openai_responses",
        "otlp",
        "token_type",
    ]


@pytest.mark.parametrize("shape", SHAPE_FILES)
def test_a_captured_shape_lands_as_its_exact_canonical_events(shape):
    body = (FIXTURES / f"{shape}.jsonl").read_bytes()
    expected = [json.loads(line) for line in (FIXTURES / f"{shape}.expected.jsonl").open()]
    batch = route({f"usage/{shape}.jsonl": body})
    assert batch.quarantine.height == 0, quarantined(batch)
    assert landed(batch) == expected
    audit = audit_of(batch)
    assert audit["lines_read"] == audit["valid_count"] == len(expected)


def test_the_anthropic_worked_example_costs_three_cents_at_list_prices():
    body = (FIXTURES / "anthropic_messages.jsonl").read_bytes()
    (event, _) = route({"usage/a.jsonl": body}).valid.to_dicts()
    assert (event["input_tokens"], event["cached_input_tokens"]) == (23_500, 20_000)
    assert (event["cache_write_tokens"], event["output_tokens"]) == (2_000, 800)
    uncached = event["input_tokens"] - event["cached_input_tokens"] - event["cache_write_tokens"]
    cost = (
        uncached * Decimal("3e-6")
        + event["cache_write_tokens"] * Decimal("3.75e-6")
        + event["cached_input_tokens"] * Decimal("3e-7")
        + event["output_tokens"] * Decimal("1.5e-5")
    )
    assert cost == Decimal("0.0300")


def test_otlp_spans_become_events_and_other_spans_are_skipped_and_counted():
    batch = route({"usage/otlp.jsonl": (FIXTURES / "otlp.jsonl").read_bytes()})
    # Line 1: 3 GenAI inference spans, an HTTP span and an invoke_agent span (whose usage
    # aggregates its children's: billing it would bill them twice). Line 2: no GenAI span.
    assert batch.valid.select("line_number", "event_id").rows() == [
        (1, "5b8efff798038103d269b633813fc60c/eee19b7ec3c1b174"),
        (1, "5b8efff798038103d269b633813fc60c/0a1b2c3d4e5f6071"),
        (1, "9f3c7a1e2b4d6f8091a2b3c4d5e6f708/1122334455667788"),
    ]
    assert audit_of(batch) == {
        "object_count": 1,
        "unreadable_object_count": 0,
        "lines_read": 3,
        "valid_count": 3,
        "duplicate_count": 0,
        "quarantined_count": 0,
        "unreported_usage_count": 0,
        "otlp_spans_skipped": 4,
    }


def test_otlp_customer_and_feature_keys_are_configurable(monkeypatch):
    monkeypatch.setenv("TOKENBILL_OTLP_CUSTOMER_KEYS", "service.name")
    monkeypatch.setenv("TOKENBILL_OTLP_FEATURE_KEYS", "gen_ai.operation.name")
    batch = route({"usage/otlp.jsonl": (FIXTURES / "otlp.jsonl").read_bytes()})
    assert batch.valid.select("customer_id", "feature").rows() == [
        ("chat-api", "chat"),
        ("chat-api", "generate_content"),
        ("voice-api", None),
    ]


def test_litellm_customer_falls_back_to_the_configured_fields(monkeypatch):
    monkeypatch.setenv("TOKENBILL_LITELLM_CUSTOMER_FIELDS", "end_user")
    batch = route({"usage/l.jsonl": (FIXTURES / "litellm.jsonl").read_bytes()})
    assert batch.valid["customer_id"].to_list() == ["acme"]
    assert quarantined(batch) == [
        (
            2,
            "chatcmpl-7b1e0d42-aa31-4f5c-8e2d-90c1b7f3e611",
            ["missing_required_field"],
            "customer_id absent: missing_required_field, expected a non-blank string",
            "litellm",
        )
    ]


def test_litellm_provider_names_become_the_cost_cards():
    """LiteLLM's ``custom_llm_provider`` (bedrock, gemini, vertex_ai-*, azure) is spelled as the
    cost card spells providers, so its usage finds its provider cost; names the card already
    uses, and unknown ones, pass unchanged."""
    line = (FIXTURES / "litellm.jsonl").read_text().splitlines()[0]
    names = [
        "bedrock",
        "gemini",
        "vertex_ai-anthropic_models",
        "azure",
        "anthropic",
        "gcp.gemini",
        "acme_llm",
    ]
    body = "\n".join(
        line.replace(
            '"custom_llm_provider":"anthropic"', f'"custom_llm_provider":"{name}"'
        ).replace('"id":"chatcmpl-3f9a', f'"id":"{i}-chatcmpl-3f9a')
        for i, name in enumerate(names)
    )
    batch = route({"usage/l.jsonl": body.encode()})
    assert batch.valid.sort("line_number")["provider"].to_list() == [
        "aws.bedrock",
        "gcp.gemini",
        "gcp.vertex_ai",
        "azure.ai.openai",
        "anthropic",
        "gcp.gemini",
        "acme_llm",
    ]


ENVELOPE = (
    '{{"event_id":"{id}","timestamp":"2026-10-05T07:30:00Z","customer_id":"acme",'
    '"model":"m"{extra},"response":{response}}}'
)


def envelope(id: str, response: str, extra: str = "") -> str:
    return ENVELOPE.format(id=id, response=response, extra=extra)


def test_ambiguous_lines_are_quarantined_naming_the_shapes():
    lines = [
        # canonical counts and a provider response: which one is the usage?
        envelope("a", '{"usage":{"prompt_tokens":5,"completion_tokens":1}}', ',"input_tokens":5'),
        # usage and usageMetadata at once
        envelope("b", '{"usage":{"prompt_tokens":5},"usageMetadata":{"promptTokenCount":5}}'),
        # input_tokens/output_tokens alone: Anthropic's (exclusive) or OpenAI's (inclusive)?
        envelope("c", '{"usage":{"input_tokens":5,"output_tokens":1}}'),
        # Anthropic's cache keys and OpenAI Responses' details in one usage object
        envelope(
            "d",
            '{"usage":{"input_tokens":5,"output_tokens":1,"cache_read_input_tokens":1,'
            '"input_tokens_details":{"cached_tokens":1}}}',
        ),
    ]
    batch = route({"usage/x.jsonl": "\n".join(lines).encode()})
    assert batch.valid.height == 0
    assert quarantined(batch) == [
        (1, "a", ["ambiguous_format"],
         "keys [input_tokens, response] belong to canonical and envelope (response): "
         "ambiguous_format, expected the keys of one shape", "ambiguous"),
        (2, "b", ["ambiguous_format"],
         "response.usage keys [prompt_tokens] with provider absent fit more than one provider "
         "shape: ambiguous_format, expected one usage object and, for input_tokens/"
         "output_tokens alone, provider anthropic or openai", "ambiguous"),
        (3, "c", ["ambiguous_format"],
         "response.usage keys [input_tokens, output_tokens] with provider absent fit more "
         "than one provider shape: ambiguous_format, expected one usage object and, for "
         "input_tokens/output_tokens alone, provider anthropic or openai", "ambiguous"),
        (4, "d", ["ambiguous_format"],
         "response.usage keys [input_tokens, output_tokens, cache_read_input_tokens, "
         "input_tokens_details] with provider absent fit more than one provider shape: "
         "ambiguous_format, expected one usage object and, for input_tokens/output_tokens "
         "alone, provider anthropic or openai", "ambiguous"),
    ]  # fmt: skip


def test_the_provider_breaks_the_one_tie():
    usage = '{"usage":{"input_tokens":5,"cache_read_input_tokens":0,"output_tokens":1}}'
    plain = '{"usage":{"input_tokens":5,"output_tokens":1}}'
    lines = [
        envelope("a", plain, ',"provider":"anthropic"'),
        envelope("o", plain, ',"provider":"openai"'),
        envelope("k", usage),  # Anthropic's keys decide, provider or not
    ]
    batch = route({"usage/x.jsonl": "\n".join(lines).encode()})
    assert batch.valid.select("event_id", "source_format", "provider").rows() == [
        ("a", "anthropic_messages", "anthropic"),
        ("o", "openai_responses", "openai"),
        ("k", "anthropic_messages", "anthropic"),
    ]


def test_unrecognized_lines_are_quarantined_with_their_keys():
    lines = [
        '{"foo":1,"bar":{"baz":2}}',
        envelope("u", '{"usage":{"tokens_in":5}}').replace('"tokens_in"', '"n_in"'),
        '{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"eyJ9"}',
        '{"specversion":"1.0","id":"2","source":"s","type":"t","subject":"acme",'
        '"data":{"resourceSpans":[]}}',
    ]
    batch = route({"usage/x.jsonl": "\n".join(lines).encode()})
    assert batch.valid.height == 0
    assert quarantined(batch) == [
        (1, None, ["unrecognized_format"],
         "keys [foo, bar]: unrecognized_format, expected a canonical event, an envelope with "
         "a provider response, OTLP JSON (not in a CloudEvent), a LiteLLM spend log or a "
         "per-token-type event", "unrecognized"),
        (2, "u", ["unrecognized_format"],
         "response.usage keys [n_in]: unrecognized_format, expected the usage object of a "
         "supported provider", "unrecognized"),
        (3, "s/1", ["unrecognized_format"],
         "CloudEvent data is absent (keys [specversion, id, source, type, data_base64]): "
         "unrecognized_format, expected data to be a JSON object", "cloudevents:unrecognized"),
        (4, "s/2", ["unrecognized_format"],
         "keys [resourceSpans, event_id, customer_id] (in CloudEvent data): "
         "unrecognized_format, expected a canonical event, an envelope with a provider "
         "response, OTLP JSON (not in a CloudEvent), a LiteLLM spend log or a per-token-type "
         "event", "cloudevents:unrecognized"),
    ]  # fmt: skip


def test_unreported_usage_is_quarantined_and_counted_never_billed_as_zero():
    # A stream cancelled before its final usage chunk: the response object has no usage.
    lines = [
        envelope(
            "s", '{"id":"chatcmpl-9","object":"chat.completion.chunk","model":"gpt-4o"}'
        ).replace('"model":"m"', '"model":"gpt-4o","status":"cancelled"'),
        envelope("n", "null", ',"provider":"anthropic"'),
        envelope("ok", '{"usage":{"prompt_tokens":5,"completion_tokens":1}}'),
    ]
    batch = route({"usage/x.jsonl": "\n".join(lines).encode()})
    assert batch.valid["event_id"].to_list() == ["ok"]
    assert quarantined(batch) == [
        (1, "s", ["usage_not_reported"],
         'response has no usage or usageMetadata (status "cancelled"): usage_not_reported, '
         "its usage is unknown, not zero", "unreported"),
        (2, "n", ["usage_not_reported"],
         "response has no usage or usageMetadata (status absent): usage_not_reported, its "
         "usage is unknown, not zero", "unreported"),
    ]  # fmt: skip
    audit = audit_of(batch)
    assert (audit["unreported_usage_count"], audit["quarantined_count"]) == (2, 2)


def test_a_token_type_other_than_input_or_output_is_quarantined():
    line = (FIXTURES / "token_type.jsonl").read_text().splitlines()[0]
    total = line.replace('"type":"input"', '"type":"total"')
    batch = route({"usage/x.jsonl": f"{line}\n{total}".encode()})
    assert batch.valid["event_id"].to_list() == ["kong-ai-gateway/00001"]
    assert quarantined(batch) == [
        (2, "kong-ai-gateway/00001", ["unknown_token_type"],
         'data.type="total": unknown_token_type, expected one of input, prompt, request, '
         "output, completion, response", "cloudevents:token_type"),
    ]  # fmt: skip


def test_native_numbers_that_break_the_contract_name_their_native_fields():
    lines = [
        # OpenAI: more cached tokens than prompt tokens
        envelope(
            "o",
            '{"usage":{"prompt_tokens":100,"completion_tokens":1,'
            '"prompt_tokens_details":{"cached_tokens":150}}}',
        ),
        # Anthropic: a count of the wrong type inside the input sum
        envelope(
            "a",
            '{"usage":{"input_tokens":10,"cache_read_input_tokens":"lots","output_tokens":1}}',
        ),
        # Gemini: a negative count; Bedrock: TTL writes above the cache writes
        envelope("g", '{"usageMetadata":{"promptTokenCount":-5,"candidatesTokenCount":1}}'),
        envelope(
            "b",
            '{"usage":{"inputTokens":1,"outputTokens":1,"cacheWriteInputTokens":10,'
            '"cacheDetails":[{"ttl":"1h","inputTokens":30}]}}',
        ),
    ]
    batch = route({"usage/x.jsonl": "\n".join(lines).encode()})
    assert batch.valid.height == 0
    assert quarantined(batch) == [
        (1, "o", ["subset_invariant_broken"],
         "cached_input_tokens (150) + cache_write_tokens (absent) = 150 > input_tokens (100): "
         "subset_invariant_broken, expected cached_input_tokens + cache_write_tokens <= "
         "input_tokens (input_tokens includes cache reads and writes) (mapped from "
         "openai_chat: input_tokens = response.usage.prompt_tokens; cached_input_tokens = "
         "response.usage.prompt_tokens_details.cached_tokens; cache_write_tokens = "
         "response.usage.prompt_tokens_details.cache_write_tokens)", "openai_chat"),
        (2, "a", ["wrong_type"],
         'cached_input_tokens="lots": wrong_type, expected an integer or a numeric string; '
         'input_tokens="lots": wrong_type, expected an integer or a numeric string (mapped '
         "from anthropic_messages: input_tokens = response.usage.input_tokens + "
         "cache_read_input_tokens + cache_creation_input_tokens; cached_input_tokens = "
         "response.usage.cache_read_input_tokens)", "anthropic_messages"),
        (3, "g", ["negative_count"],
         'input_tokens="-5": negative_count, expected an integer >= 0; output_tokens="-5": '
         "negative_count, expected an integer >= 0 (mapped from gemini: input_tokens = "
         "response.usageMetadata.promptTokenCount + toolUsePromptTokenCount; output_tokens = "
         "response.usageMetadata.candidatesTokenCount (or Live's responseTokenCount) + "
         "thoughtsTokenCount, unless promptTokenCount + candidates + toolUsePromptTokenCount "
         "= totalTokenCount (candidates then include the thoughts))", "gemini"),
        (4, "b", ["subset_invariant_broken"],
         "cache_write_5m_tokens (0) + cache_write_1h_tokens (30) = 30 > cache_write_tokens "
         "(10): subset_invariant_broken, expected cache_write_5m_tokens + "
         "cache_write_1h_tokens <= cache_write_tokens (cache_write_tokens includes the writes "
         "of every TTL) (mapped from bedrock_converse: cache_write_tokens = "
         "response.usage.cacheWriteInputTokens; cache_write_5m_tokens = "
         "response.usage.cacheDetails[ttl=5m].inputTokens; cache_write_1h_tokens = "
         "response.usage.cacheDetails[ttl=1h].inputTokens)", "bedrock_converse"),
    ]  # fmt: skip


def test_every_shape_reason_is_exercised_above():
    assert set(SHAPE_REASONS) == {
        "ambiguous_format",
        "unrecognized_format",
        "usage_not_reported",
        "unknown_token_type",
    }


def test_a_mixed_hour_reconciles_record_by_record_and_per_shape():
    """Every fixture in one object, twice (the second copy all duplicates), plus bad lines:
    lines_read = valid + duplicates + quarantined, and the format audit says per shape."""
    text = "".join((FIXTURES / f"{s}.jsonl").read_text() for s in SHAPE_FILES)
    bad = "\n".join(['{"foo":1}', "not json", envelope("s", "{}")]) + "\n"
    batch = route({"usage/a.jsonl": (text + bad).encode(), "usage/b.jsonl": text.encode()})
    events = sum(1 for s in SHAPE_FILES for _ in (FIXTURES / f"{s}.expected.jsonl").open())
    assert audit_of(batch) == {
        "object_count": 2,
        "unreadable_object_count": 0,
        "lines_read": 2 * events + 3,
        "valid_count": events,
        "duplicate_count": events,
        "quarantined_count": 3,
        "unreported_usage_count": 1,
        "otlp_spans_skipped": 8,
    }
    formats = batch.format_audit().drop("partition_hour")
    assert formats.rows() == [
        ("anthropic_messages", 4, 2, 2, 0),
        ("bedrock_converse", 2, 1, 1, 0),
        ("canonical", 2, 1, 1, 0),
        ("cloudevents:anthropic_messages", 2, 1, 1, 0),
        ("cloudevents:canonical", 2, 1, 1, 0),
        ("cloudevents:token_type", 4, 2, 2, 0),
        ("gemini", 6, 3, 3, 0),
        ("litellm", 4, 2, 2, 0),
        ("openai_chat", 4, 2, 2, 0),
        ("openai_realtime", 2, 1, 1, 0),
        ("openai_responses", 2, 1, 1, 0),
        ("otlp", 6, 3, 3, 0),
        ("unparsed", 1, 0, 0, 1),
        ("unrecognized", 1, 0, 0, 1),
        ("unreported", 1, 0, 0, 1),
    ]
    assert formats["records_read"].sum() == 2 * events + 3
    # A quarantined line keeps the text it was sent as, not its canonical mapping.
    assert batch.quarantine.filter(pl.col("event_id") == "s")["raw_line"].to_list() == [
        envelope("s", "{}")
    ]


def test_a_native_shape_arrives_as_parquet_rows_with_nested_columns():
    (line,) = (FIXTURES / "bedrock_converse.jsonl").read_text().splitlines()
    row = json.loads(line)
    row["timestamp"] = datetime(2026, 10, 5, 7, 20, tzinfo=UTC)
    buf = io.BytesIO()
    pl.DataFrame([row]).write_parquet(buf)
    batch = route({"usage/b.parquet": buf.getvalue()})
    expected = [json.loads(x) for x in (FIXTURES / "bedrock_converse.expected.jsonl").open()]
    assert landed(batch) == expected


def test_records_land_with_their_shape_and_an_older_warehouse_gains_the_new_columns(tmp_path):
    """A warehouse created before the shapes existed (no subset or source_format columns) is
    migrated by the landing; the mixed hour lands with every record's shape."""
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema raw")
        con.execute(
            """
            create table raw.usage_events (
                partition_hour timestamp not null, source_key varchar not null,
                line_number bigint not null, event_id varchar not null,
                event_ts timestamp not null, customer_id varchar not null,
                subscription_id varchar, plan varchar, feature varchar, provider varchar,
                model varchar not null, environment varchar, region varchar,
                status varchar not null, attempt bigint not null, request_group_id varchar,
                trace_id varchar, input_tokens bigint not null, cached_input_tokens bigint,
                cache_write_tokens bigint, output_tokens bigint not null,
                reasoning_tokens bigint, metadata varchar
            )"""
        )
        text = "".join((FIXTURES / f"{s}.jsonl").read_text() for s in SHAPE_FILES)
        batch = route({"usage/a.jsonl": text.encode()})
        ensure_raw_schema(con)
        land_batch(con, batch)
        by_format = con.sql(
            "select source_format, count(*), sum(input_tokens)::bigint, "
            "sum(cache_write_1h_tokens)::bigint, sum(audio_input_tokens)::bigint "
            "from raw.usage_events group by all order by 1"
        ).fetchall()
        audit = con.sql(
            "select lines_read, valid_count, otlp_spans_skipped from raw.ingestion_audit"
        ).fetchall()
        formats = con.sql(
            "select sum(records_read)::bigint from raw.ingestion_format_audit"
        ).fetchall()
    assert by_format == [
        ("anthropic_messages", 2, 26_600, 2_000, None),
        ("bedrock_converse", 1, 12_500, 1_500, None),
        ("canonical", 1, 3_000, None, 2_500),
        ("cloudevents:anthropic_messages", 1, 1_040, None, None),
        ("cloudevents:canonical", 1, 1_200, None, None),
        ("cloudevents:token_type", 2, 123_456, None, None),
        ("gemini", 3, 10_300, None, 1_500),
        ("litellm", 2, 23_500, None, None),
        ("openai_chat", 2, 12_000, None, 0),
        ("openai_realtime", 1, 1_200, None, 900),
        ("openai_responses", 1, 6_000, None, None),
        ("otlp", 3, 15_446, None, 0),
    ]
    assert audit == [(20, 20, 4)]
    assert formats == [(20,)]


def test_malformed_native_values_are_quarantined_never_crash_and_always_reconcile():
    """Values of every wrong kind inside native objects: each line ends in exactly one place,
    with the reason the contract (or the shape) gives; nothing fails the batch."""
    lines = [
        envelope("g", '{"usageMetadata":{"promptTokenCount":"abc","candidatesTokenCount":1,'
                 '"totalTokenCount":99999999999999999999999,'
                 '"promptTokensDetails":[{"modality":"AUDIO","tokenCount":"x"}]}}'),
        envelope("b", '{"usage":{"inputTokens":1,"outputTokens":1,'
                 '"cacheDetails":[{"ttl":"1h","inputTokens":"zz"}]}}'),
        envelope("a", '{"usage":{"input_tokens":1e30,"output_tokens":1,'
                 '"cache_read_input_tokens":99999999999999999999999999}}'),
        envelope("s", '"a string"'),
        envelope("u", '{"usage":[1]}'),
        '{"resourceSpans":{"a":1}}',
        '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"t","spanId":"s",'
        '"endTimeUnixNano":"99999999999999999999","attributes":[{"key":'
        '"gen_ai.usage.input_tokens","value":{"intValue":"5"}}]}]}]}]}',
        '{"custom_llm_provider":"x","id":"l","endTime":1e300,"prompt_tokens":1,'
        '"completion_tokens":1,"model":"m","end_user":"c"}',
        '{"specversion":"1.0","id":"1","source":"s","subject":"c","time":"2026-10-05T07:00:00Z",'
        '"data":{"tokens":5,"type":null,"model":"m"}}',
        '{"specversion":"1.0","data":"text"}',
        "{}",
    ]  # fmt: skip
    batch = route({"usage/x.jsonl": "\n".join(lines).encode()})
    assert batch.valid.height == 0
    assert batch.quarantine.select("line_number", "reason_codes").rows() == [
        (1, ["wrong_type"]),
        (2, ["wrong_type"]),
        (3, ["count_out_of_range", "wrong_type"]),
        (4, ["unrecognized_format"]),
        (5, ["unrecognized_format"]),
        (6, ["unrecognized_format"]),
        (7, ["missing_required_field"]),
        (8, ["unparseable_timestamp"]),
        (9, ["unknown_token_type"]),
        (10, ["unrecognized_format"]),
        (11, ["unrecognized_format"]),
    ]
    audit = audit_of(batch)
    assert audit["lines_read"] == audit["quarantined_count"] == len(lines)


def test_a_cloudevent_wrapping_a_litellm_log_takes_its_key_from_the_envelope():
    (log, _) = (FIXTURES / "litellm.jsonl").read_text().splitlines()
    wrapped = (
        '{"specversion":"1.0","id":"42","source":"litellm-proxy","type":"litellm.spend",'
        f'"subject":"globex","time":"2026-10-05T07:21:00Z","data":{log}}}'
    )
    unattributed = (
        wrapped.replace('"end_user":"acme"', '"end_user":""')
        .replace('"user_api_key_team_id":"team-acme",', "")
        .replace('"id":"42"', '"id":"43"')
    )
    batch = route({"usage/x.jsonl": f"{wrapped}\n{unattributed}".encode()})
    assert batch.valid.select(
        "event_id", "customer_id", "source_format", "input_tokens"
    ).rows() == [
        ("litellm-proxy/42", "acme", "cloudevents:litellm", 23_500),
        ("litellm-proxy/43", "globex", "cloudevents:litellm", 23_500),
    ]
