"""The usage-event contract: one test per quarantine reason, coercions and invariants."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandera.polars as pa
import polars as pl
import pytest

from contracts.usage_event import (
    NULL_FIELDS,
    REASONS,
    SCHEMA_PATH,
    SHAPE_REASONS,
    SOURCE_HOUR,
    USAGE_EVENT_SCHEMA,
    WIRE_FIELDS,
    contract_faults,
    pandera_faults,
    passes_contract,
    render_json_schema,
    validate_wire_events,
)

HOUR = datetime(2026, 10, 5, 7, tzinfo=UTC)


def wire(**overrides: str | None) -> dict[str, str | None]:
    row: dict[str, str | None] = dict.fromkeys(WIRE_FIELDS)
    row.update(
        event_id="evt_1",
        timestamp="2026-10-05T07:12:00Z",
        customer_id="cus_1",
        model="gpt-4o",
        input_tokens="100",
        output_tokens="10",
    )
    row.update(overrides)
    return row


def validate(*rows: dict) -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = pl.DataFrame(list(rows), schema=dict.fromkeys(WIRE_FIELDS, pl.String))
    frame = frame.with_columns(pl.lit(HOUR).cast(pl.Datetime("us", "UTC")).alias(SOURCE_HOUR))
    return validate_wire_events(frame)


def reasons_of(**overrides: str | None) -> list[str]:
    valid, failures = validate(wire(**overrides))
    assert valid.height + failures.height == 1
    return failures["reason_codes"].to_list()[0] if failures.height else []


BAD_FIELDS = [
    ({"customer_id": None}, "missing_required_field"),
    ({"event_id": ""}, "missing_required_field"),
    ({"customer_id": "   "}, "missing_required_field"),
    ({"event_id": "\t"}, "missing_required_field"),
    ({"model": " \n "}, "missing_required_field"),
    ({"timestamp": None}, "missing_required_field"),
    ({"timestamp": "  "}, "missing_required_field"),
    ({"output_tokens": None}, "missing_required_field"),
    ({"input_tokens": "12.5"}, "wrong_type"),
    ({"input_tokens": "true"}, "wrong_type"),
    ({"model": '{"name":"gpt-4o"}'}, "wrong_type"),
    ({"metadata": '"a string"'}, "wrong_type"),
    ({"input_tokens": "-1"}, "negative_count"),
    ({"input_tokens": "1000000000"}, "count_out_of_range"),
    ({"output_tokens": "123456789012345678901234"}, "count_out_of_range"),
    ({"attempt": "0"}, "count_out_of_range"),
    ({"attempt": "-0"}, "count_out_of_range"),
    ({"cached_input_tokens": "60", "cache_write_tokens": "41"}, "subset_invariant_broken"),
    ({"reasoning_tokens": "11"}, "subset_invariant_broken"),
    ({"input_tokens": "-0", "cached_input_tokens": "1"}, "subset_invariant_broken"),
    ({"timestamp": "2026-10-05 07:12"}, "unparseable_timestamp"),
    ({"timestamp": "2026-10-05T07:12:00"}, "unparseable_timestamp"),  # no offset
    ({"timestamp": "2026-02-30T07:12:00Z"}, "unparseable_timestamp"),
    ({"timestamp": "2026-10-05T08:00:00Z"}, "timestamp_outside_hour"),
    ({"timestamp": "2026-10-05T07:59:59-01:00"}, "timestamp_outside_hour"),
    ({"status": "ok"}, "unknown_status"),
]


@pytest.mark.parametrize(("overrides", "reason"), BAD_FIELDS)
def test_each_bad_field_is_quarantined_with_its_reason(overrides, reason):
    assert reasons_of(**overrides) == [reason]


def test_every_line_level_reason_is_exercised_above():
    # The shape reasons are exercised in test_shapes.py.
    line_reasons = set(REASONS) - {"invalid_json", "unreadable_object", "unsupported_format"}
    line_reasons -= set(SHAPE_REASONS)
    exercised = {
        "missing_required_field", "wrong_type", "negative_count", "count_out_of_range",
        "subset_invariant_broken", "unparseable_timestamp", "timestamp_outside_hour",
        "unknown_status",
    }  # fmt: skip
    assert line_reasons == exercised


def test_several_problems_on_one_line_are_all_reported():
    _, failures = validate(wire(input_tokens="-3", status="ok", customer_id=None))
    assert failures["reason_codes"].to_list() == [
        ["missing_required_field", "negative_count", "unknown_status"]
    ]
    assert failures["reason_detail"].to_list() == [
        "customer_id absent: missing_required_field, expected a non-blank string; "
        'input_tokens="-3": negative_count, expected an integer >= 0; '
        'status="ok": unknown_status, expected one of success, failed, retried, cancelled'
    ]


SUBSET_EXPECTED = (
    "expected cached_input_tokens + cache_write_tokens <= input_tokens "
    "(input_tokens includes cache reads and writes)"
)
DETAILS = [
    (
        {"customer_id": None},
        "customer_id absent: missing_required_field, expected a non-blank string",
    ),
    (
        {"customer_id": "   "},
        'customer_id="   ": missing_required_field, expected a non-blank string',
    ),
    (
        {"output_tokens": None},
        "output_tokens absent: missing_required_field, expected an integer or a numeric string",
    ),
    (
        {"timestamp": " "},
        'timestamp=" ": missing_required_field, expected an RFC 3339 timestamp with an offset',
    ),
    (
        {"input_tokens": "12.5"},
        'input_tokens="12.5": wrong_type, expected an integer or a numeric string',
    ),
    (
        {"model": '{"name":"gpt-4o"}'},
        'model="{"name":"gpt-4o"}": wrong_type, expected a string of at most 256 characters',
    ),
    (
        {"region": "r" * 300},
        f'region="{"r" * 64}..." (300 characters): wrong_type, '
        "expected a string of at most 256 characters",
    ),
    ({"metadata": '"a string"'}, 'metadata="a string": wrong_type, expected a JSON object'),
    ({"input_tokens": "-5"}, 'input_tokens="-5": negative_count, expected an integer >= 0'),
    ({"attempt": "-1"}, 'attempt="-1": negative_count, expected an integer >= 1'),
    (
        {"input_tokens": "1000000000"},
        'input_tokens="1000000000": count_out_of_range, expected 0 <= n < 1,000,000,000',
    ),
    ({"attempt": "0"}, 'attempt="0": count_out_of_range, expected 1 <= n < 1,000,000,000'),
    (
        {"cached_input_tokens": "60", "cache_write_tokens": "41"},
        "cached_input_tokens (60) + cache_write_tokens (41) = 101 > input_tokens (100): "
        f"subset_invariant_broken, {SUBSET_EXPECTED}",
    ),
    (
        {"cached_input_tokens": "0101"},
        "cached_input_tokens (101) + cache_write_tokens (absent) = 101 > input_tokens (100): "
        f"subset_invariant_broken, {SUBSET_EXPECTED}",
    ),
    (
        {"reasoning_tokens": "11"},
        "reasoning_tokens (11) > output_tokens (10): subset_invariant_broken, "
        "expected reasoning_tokens <= output_tokens (output_tokens includes reasoning)",
    ),
    (
        {"timestamp": "2026-10-05 07:12"},
        'timestamp="2026-10-05 07:12": unparseable_timestamp, '
        "expected RFC 3339 with an offset, e.g. 2026-10-05T07:12:00Z",
    ),
    (
        {"timestamp": "2026-10-05T07:59:59-01:00"},
        'timestamp="2026-10-05T07:59:59-01:00" (UTC hour dt=2026-10-05/hour=08): '
        "timestamp_outside_hour, expected a time in its object key's hour dt=2026-10-05/hour=07",
    ),
    (
        {"status": "ok"},
        'status="ok": unknown_status, expected one of success, failed, retried, cancelled',
    ),
]


@pytest.mark.parametrize(("overrides", "detail"), DETAILS)
def test_each_detail_names_the_field_the_value_the_rule_and_what_was_expected(overrides, detail):
    _, failures = validate(wire(**overrides))
    assert failures["reason_detail"].to_list() == [detail]


def test_a_null_sent_reads_as_null_and_an_absent_field_as_absent():
    rows = [wire(event_id="a", customer_id=None), wire(event_id="b", customer_id=None)]
    frame = pl.DataFrame(rows, schema=dict.fromkeys(WIRE_FIELDS, pl.String)).with_columns(
        pl.lit(HOUR).cast(pl.Datetime("us", "UTC")).alias(SOURCE_HOUR),
        pl.Series(NULL_FIELDS, [["customer_id"], None], dtype=pl.List(pl.String)),
    )
    valid, failures = validate_wire_events(frame)
    assert failures["reason_detail"].to_list() == [
        "customer_id=null: missing_required_field, expected a non-blank string",
        "customer_id absent: missing_required_field, expected a non-blank string",
    ]
    assert NULL_FIELDS not in valid.columns


@pytest.mark.parametrize(
    "overrides",
    [
        {"input_tokens": "-5", "cached_input_tokens": "3"},
        {"output_tokens": "-1", "reasoning_tokens": "5"},
        {"cached_input_tokens": "-5", "cache_write_tokens": "200"},
    ],
)
def test_a_negative_count_is_one_reason_not_also_a_broken_invariant(overrides):
    assert reasons_of(**overrides) == ["negative_count"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"input_tokens": "12.5", "cached_input_tokens": "20"}, "wrong_type"),
        ({"input_tokens": None, "cached_input_tokens": "20"}, "missing_required_field"),
        ({"output_tokens": "1000000000", "reasoning_tokens": "5"}, "count_out_of_range"),
        ({"timestamp": "2026-10-05 08:12"}, "unparseable_timestamp"),
    ],
)
def test_a_field_that_fails_its_own_rule_is_not_judged_by_an_invariant(overrides, reason):
    assert reasons_of(**overrides) == [reason]


def test_both_invariants_broken_are_both_detailed():
    _, failures = validate(wire(cached_input_tokens="101", reasoning_tokens="11"))
    assert failures["reason_codes"].to_list() == [["subset_invariant_broken"]]
    assert failures["reason_detail"].to_list() == [
        "cached_input_tokens (101) + cache_write_tokens (absent) = 101 > input_tokens (100): "
        f"subset_invariant_broken, {SUBSET_EXPECTED}; "
        "reasoning_tokens (11) > output_tokens (10): subset_invariant_broken, "
        "expected reasoning_tokens <= output_tokens (output_tokens includes reasoning)"
    ]


def test_numeric_strings_and_integers_are_coerced_to_int64():
    valid, failures = validate(
        wire(input_tokens="2546", cached_input_tokens="0046", reasoning_tokens="3")
    )
    assert failures.height == 0
    row = valid.row(0, named=True)
    assert (row["input_tokens"], row["cached_input_tokens"], row["reasoning_tokens"]) == (
        2546,
        46,
        3,
    )
    assert valid.schema["input_tokens"] == pl.Int64


def test_defaults_and_utc_conversion():
    valid, _ = validate(wire(timestamp="2026-10-05T09:12:00.5+02:00"))
    row = valid.row(0, named=True)
    assert row["event_ts"] == datetime(2026, 10, 5, 7, 12, 0, 500000)
    assert (row["status"], row["attempt"]) == ("success", 1)


def test_subsets_may_equal_their_totals():
    assert (
        reasons_of(cached_input_tokens="60", cache_write_tokens="40", reasoning_tokens="10") == []
    )


def test_count_bound_is_exclusive():
    assert reasons_of(input_tokens="999999999") == []


def test_valid_rows_keep_their_order_and_failures_their_row_position():
    valid, failures = validate(
        wire(event_id="a"), wire(event_id="b", status="x"), wire(event_id="c")
    )
    assert valid["event_id"].to_list() == ["a", "c"]
    assert failures["row"].to_list() == [1]


def test_the_one_pass_screen_rejects_exactly_the_rows_pandera_fails():
    # Every bad field alone, pairs of them, and rows that pass (edge values included).
    rows = [wire(**o) for o, _ in BAD_FIELDS]
    rows += [
        wire(**{**a, **b})
        for (a, _), (b, _) in zip(BAD_FIELDS, BAD_FIELDS[3:], strict=False)
        if not a.keys() & b.keys()
    ]
    rows += [
        wire(),
        wire(input_tokens="999999999", cached_input_tokens="999999999"),
        wire(attempt="1", status="cancelled", metadata='{"a":1}', region="r" * 256),
        wire(timestamp="2026-10-05t07:00:00.123456789+00:00"),
        wire(region="r" * 257),
    ]
    frame = pl.DataFrame(rows, schema=dict.fromkeys(WIRE_FIELDS, pl.String)).with_columns(
        pl.lit(HOUR).cast(pl.Datetime("us", "UTC")).alias(SOURCE_HOUR)
    )
    screened = frame.select(passes_contract())[:, 0].to_list()
    try:
        USAGE_EVENT_SCHEMA.validate(frame, lazy=True)
        failed = set()
    except pa.errors.SchemaErrors as exc:
        failed = set(exc.failure_cases["index"].to_list())
    assert {i for i, ok in enumerate(screened) if not ok} == failed
    assert len(failed) == len(rows) - 4  # every row but the four valid ones
    # Ingestion judges the suspects rule by rule in one pass: the same faults pandera reports.
    ordered = ("row", "field", "reason")
    assert (
        contract_faults(frame).sort(ordered, nulls_last=True).rows()
        == pandera_faults(frame).sort(ordered, nulls_last=True).rows()
    )
    assert contract_faults(frame)["row"].n_unique() == len(failed)


def test_published_json_schema_is_generated_from_the_pandera_schema():
    assert SCHEMA_PATH.read_text() == render_json_schema(), (
        "contracts/usage_event.schema.json is stale: run python -m contracts.usage_event"
    )
    # The canonical event's schema; the producer shapes around it: tests/test_shapes_schema.py.
    schema = json.loads(SCHEMA_PATH.read_text())["$defs"]["canonical"]
    assert schema["required"] == [
        "event_id", "timestamp", "customer_id", "model", "input_tokens", "output_tokens"
    ]  # fmt: skip
    assert schema["properties"]["status"]["enum"] == ["success", "failed", "retried", "cancelled"]
    # A blank id is as good as absent: required identifiers need a non-whitespace character.
    assert schema["properties"]["customer_id"]["pattern"] == r"\S"
    assert "pattern" not in schema["properties"]["feature"]
    assert schema["properties"]["input_tokens"]["anyOf"][0] == {
        "type": "integer", "minimum": 0, "exclusiveMaximum": 1_000_000_000
    }  # fmt: skip
