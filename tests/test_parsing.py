"""Objects to routed lines, without a warehouse: formats, unreadable objects, duplicates."""

from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime

import duckdb
import polars as pl
import pytest

from contracts.usage_event import NULL_FIELDS
from orchestration.defs.ingestion.landing import BackgroundLander
from orchestration.defs.ingestion.parsing import (
    HourInput,
    S3Object,
    extract_wire_fields,
    list_hour_objects,
    route_hours,
    split_lines,
)

HOUR = datetime(2026, 10, 5, 7, tzinfo=UTC)
LINE = (
    '{{"event_id":"{id}","timestamp":"2026-10-05T07:00:0{s}Z","customer_id":"c",'
    '"model":"m","input_tokens":{i},"output_tokens":1}}'
)


def route(objects: dict[str, bytes]):
    keys = [S3Object(k, "etag", len(v)) for k, v in objects.items()]
    return route_hours([HourInput(HOUR, keys, list(objects.values()))])


def audit_of(batch) -> dict:
    (row,) = batch.audit().drop("partition_hour").to_dicts()
    return row


def test_jsonl_gzip_and_parquet_land_the_same_events():
    text = LINE.format(id="a", s=1, i=5) + "\n" + LINE.format(id="b", s=2, i=6) + "\n"
    frame = pl.DataFrame(
        {
            "event_id": ["c"],
            "timestamp": [datetime(2026, 10, 5, 7, 0, 3, tzinfo=UTC)],
            "customer_id": ["c"],
            "model": ["m"],
            "input_tokens": [7],
            "output_tokens": [1],
        }
    )
    buf = io.BytesIO()
    frame.write_parquet(buf)
    batch = route(
        {
            "p/1.jsonl": text.encode(),
            "p/2.jsonl.gz": gzip.compress(LINE.format(id="d", s=4, i=8).encode()),
            "p/3.parquet": buf.getvalue(),
        }
    )
    assert batch.valid.select("source_key", "line_number", "event_id", "input_tokens").rows() == [
        ("p/1.jsonl", 1, "a", 5),
        ("p/1.jsonl", 2, "b", 6),
        ("p/2.jsonl.gz", 1, "d", 8),
        ("p/3.parquet", 1, "c", 7),
    ]
    assert batch.valid["event_ts"].to_list()[3] == datetime(2026, 10, 5, 7, 0, 3)
    assert audit_of(batch) == {
        "object_count": 3,
        "unreadable_object_count": 0,
        "lines_read": 4,
        "valid_count": 4,
        "duplicate_count": 0,
        "quarantined_count": 0,
        "unreported_usage_count": 0,
        "otlp_spans_skipped": 0,
    }


def test_blank_and_truncated_lines_are_invalid_json_with_their_line_numbers():
    body = LINE.format(id="a", s=1, i=5) + "\n\n" + '{"event_id": "x"\r\n' + "[1, 2]\n"
    batch = route({"p/1.jsonl": body.encode()})
    assert batch.quarantine.select("line_number", "reason_codes", "raw_line").rows() == [
        (2, ["invalid_json"], ""),
        (3, ["invalid_json"], '{"event_id": "x"'),
        (4, ["invalid_json"], "[1, 2]"),
    ]
    assert audit_of(batch)["lines_read"] == 4


def test_corrupt_objects_are_quarantined_whole_and_the_others_still_land():
    batch = route(
        {
            "p/bad.jsonl.gz": b"not gzip at all",
            "p/bad.parquet": b"PAR1 nope",
            "p/latin1.jsonl": "caf\xe9".encode("latin-1"),
            "p/good.jsonl": LINE.format(id="a", s=1, i=5).encode(),
            "p/notes.csv": b"a,b",
        }
    )
    assert batch.valid["event_id"].to_list() == ["a"]
    assert batch.quarantine.select("source_key", "line_number", "reason_codes").rows() == [
        ("p/bad.jsonl.gz", None, ["unreadable_object"]),
        ("p/bad.parquet", None, ["unreadable_object"]),
        ("p/latin1.jsonl", None, ["unreadable_object"]),
        ("p/notes.csv", None, ["unsupported_format"]),
    ]
    assert audit_of(batch)["unreadable_object_count"] == 4
    assert audit_of(batch)["quarantined_count"] == 0  # no line of a readable object


def test_a_leading_byte_order_mark_is_ignored_in_plain_and_gzipped_objects():
    def text(*ids: str) -> bytes:
        return "".join(LINE.format(id=i, s=1, i=5) + "\n" for i in ids).encode()

    bom = b"\xef\xbb\xbf"
    batch = route(
        {"p/1.jsonl": bom + text("a", "b"), "p/2.jsonl.gz": gzip.compress(bom + text("c", "d"))}
    )
    assert batch.quarantine.height == 0
    assert batch.valid.select("source_key", "line_number", "event_id").rows() == [
        ("p/1.jsonl", 1, "a"),
        ("p/1.jsonl", 2, "b"),
        ("p/2.jsonl.gz", 1, "c"),
        ("p/2.jsonl.gz", 2, "d"),
    ]


def test_a_byte_order_mark_inside_an_object_is_still_invalid_json():
    body = LINE.format(id="a", s=1, i=5) + "\n\ufeff" + LINE.format(id="b", s=2, i=6)
    batch = route({"p/1.jsonl": body.encode()})
    assert batch.valid["event_id"].to_list() == ["a"]
    assert batch.quarantine.select("line_number", "reason_codes").rows() == [(2, ["invalid_json"])]


def test_blank_ids_are_missing_and_details_tell_null_from_absent():
    lines = [
        LINE.format(id="a", s=1, i=5).replace('"customer_id":"c"', '"customer_id":"   "'),
        LINE.format(id="b", s=1, i=5).replace('"model":"m"', '"model":null'),
        LINE.format(id="c", s=1, i=5).replace('"model":"m",', ""),
        LINE.format(id=" \\t", s=1, i=5),
    ]
    batch = route({"p/1.jsonl": "\n".join(lines).encode()})
    assert batch.valid.height == 0
    quarantined = batch.quarantine.select(
        "line_number", "event_id", "reason_codes", "reason_detail"
    )
    assert quarantined.rows() == [
        (1, "a", ["missing_required_field"],
         'customer_id="   ": missing_required_field, expected a non-blank string'),
        (2, "b", ["missing_required_field"],
         "model=null: missing_required_field, expected a non-blank string"),
        (3, "c", ["missing_required_field"],
         "model absent: missing_required_field, expected a non-blank string"),
        (4, " \t", ["missing_required_field"],
         'event_id=" \t": missing_required_field, expected a non-blank string'),
    ]  # fmt: skip


def test_first_occurrence_wins_in_key_then_line_order_and_conflicts_are_flagged():
    batch = route(
        {
            "p/b.jsonl": (
                LINE.format(id="x", s=1, i=5) + "\n" + LINE.format(id="x", s=1, i=9)
            ).encode(),
            "p/a.jsonl": LINE.format(id="x", s=1, i=5).encode(),
        }
    )
    assert batch.valid.select("source_key", "line_number").rows() == [("p/a.jsonl", 1)]
    assert batch.duplicates.drop("partition_hour").rows() == [
        ("p/b.jsonl", 1, "x", "p/a.jsonl", 1, False),
        ("p/b.jsonl", 2, "x", "p/a.jsonl", 1, True),
    ]


def test_an_invalid_copy_does_not_hide_a_valid_one():
    bad = LINE.format(id="x", s=1, i=-1)
    good = LINE.format(id="x", s=1, i=5)
    batch = route({"p/a.jsonl": f"{bad}\n{good}".encode()})
    assert batch.valid.select("line_number", "input_tokens").rows() == [(2, 5)]
    assert batch.quarantine["line_number"].to_list() == [1]
    assert batch.duplicates.height == 0


def test_empty_hour_routes_nothing():
    batch = route({})
    assert (batch.valid.height, batch.duplicates.height, batch.quarantine.height) == (0, 0, 0)
    assert audit_of(batch)["lines_read"] == 0


def test_listing_is_paginated_and_sorted(s3_client, bucket):
    for i in reversed(range(1005)):
        s3_client.put_object(Bucket=bucket, Key=f"u/dt=2026-10-05/hour=07/{i:04d}.jsonl", Body=b"")
    s3_client.put_object(Bucket=bucket, Key="u/dt=2026-10-05/hour=08/x.jsonl", Body=b"")
    found = list_hour_objects(s3_client, bucket, "u/dt=2026-10-05/hour=07/")
    assert len(found) == 1005
    assert found[0].key.endswith("0000.jsonl") and found[-1].key.endswith("1004.jsonl")


def test_hours_batched_together_are_routed_as_if_alone():
    line8 = LINE.format(id="x", s=1, i=6).replace("T07:", "T08:")
    hour8 = datetime(2026, 10, 5, 8, tzinfo=UTC)
    batch = route_hours(
        [
            HourInput(
                HOUR, [S3Object("h7/a.jsonl", "e", 1)], [LINE.format(id="x", s=1, i=5).encode()]
            ),
            HourInput(hour8, [S3Object("h8/a.jsonl", "e", 1)], [line8.encode()]),
            HourInput(datetime(2026, 10, 5, 9, tzinfo=UTC), [], []),
        ]
    )
    # The same event_id in two hours is not a same-hour duplicate (staging handles it).
    assert batch.valid.select("partition_hour", "event_id", "input_tokens").rows() == [
        (datetime(2026, 10, 5, 7), "x", 5),
        (datetime(2026, 10, 5, 8), "x", 6),
    ]
    assert batch.audit().select("partition_hour", "lines_read", "valid_count").rows() == [
        (datetime(2026, 10, 5, 7), 1, 1),
        (datetime(2026, 10, 5, 8), 1, 1),
        (datetime(2026, 10, 5, 9), 0, 0),
    ]


def test_split_lines_numbers_lines_like_a_text_editor():
    lines = split_lines(["a\nb\n", "c\r\n\nd", "", "\n", "e"], [0, 1, 2, 3, 4])
    assert lines.rows() == [
        (0, 1, "a"),
        (0, 2, "b"),
        (1, 1, "c"),
        (1, 2, ""),
        (1, 3, "d"),
        (4, 1, "e"),
    ]


def extract(*lines: str) -> list[dict]:
    wire, not_objects = extract_wire_fields(pl.DataFrame({"raw_line": list(lines)}))
    rows = {r.pop("line_idx"): r for r in wire.drop(NULL_FIELDS).to_dicts()}
    bad = set(not_objects["line_idx"].to_list())
    return [None if i in bad else rows[i] for i in range(len(lines))]


def test_values_are_extracted_as_the_text_they_were_sent_as():
    (row,) = extract(
        '{"event_id": "e\\u00e9", "customer_id": 12, "input_tokens": "2546", '
        '"output_tokens": 1.50, "model": {"name": "m"}, "plan": true, "feature": null, '
        '"region": [1, 2], "trace_id": ""}'
    )
    assert {k: v for k, v in row.items() if v is not None} == {
        "event_id": "eé",
        "customer_id": "12",
        "input_tokens": "2546",
        "output_tokens": "1.5",
        "model": '{"name":"m"}',
        "plan": "true",
        "region": "[1,2]",
        "trace_id": "",
    }


def test_unknown_top_level_fields_are_merged_into_metadata():
    rows = extract(
        '{"event_id": "a", "metadata": {"app": "web", "n": 1}}',
        '{"event_id": "b", "metadata": {"app": "web"}, "sdk": "2.6", "extra": {"x": 1}}',
        '{"event_id": "c", "sdk": "2.6"}',
        '{"event_id": "d", "metadata": null, "sdk": "2.6"}',
        '{"event_id": "e", "metadata": "free text", "sdk": "2.6"}',
        '{"event_id": "f", "metadata": {"sdk": "old"}, "sdk": "new"}',
        '{"event_id": "g", "region": null}',
        '{"event_id": "h", "metadata": {}}',
    )
    assert [r["metadata"] for r in rows] == [
        '{"app":"web","n":1}',
        '{"app":"web","sdk":"2.6","extra":{"x":1}}',
        '{"sdk":"2.6"}',
        '{"sdk":"2.6"}',
        '"free text"',
        '{"sdk":"new"}',
        None,
        "{}",
    ]


def test_required_fields_sent_as_null_are_told_from_absent_ones():
    wire, _ = extract_wire_fields(
        pl.DataFrame(
            {
                "raw_line": [
                    '{"event_id": "a", "customer_id": null, "model": null, "region": null}',
                    '{"event_id": "b"}',
                    '{"event_id": "c", "sdk": "2.6"}',
                ]
            }
        )
    )
    assert wire[NULL_FIELDS].to_list() == [["customer_id", "model"], None, []]


def test_lines_that_are_not_json_objects_are_told_apart():
    rows = extract('{"event_id": "a"}', "[1]", '"text"', "", "{", '  {"event_id": "b"}', "nul")
    assert [None if r is None else r["event_id"] for r in rows] == [
        "a",
        None,
        None,
        None,
        None,
        "b",
        None,
    ]


def test_the_background_lander_lands_batches_in_order_and_reports_a_failure(tmp_path):
    path = str(tmp_path / "w.duckdb")
    first = route({"p/1.jsonl": LINE.format(id="a", s=1, i=5).encode()})
    second = route({"p/1.jsonl": LINE.format(id="b", s=2, i=6).encode()})  # the same hour again
    opened = []

    def connect():
        opened.append(path)
        return duckdb.connect(path)

    with BackgroundLander(connect) as lander:
        lander.put(first)
        lander.put(second)
    # Each batch replaces its hours: the second run of the hour is what stays.
    with duckdb.connect(path, read_only=True) as con:
        assert con.sql("select event_id from raw.usage_events").fetchall() == [("b",)]
    assert [a["lines_read"].to_list() for a in lander.audits] == [[1], [1]]
    assert len(opened) == 2  # one connection per batch, closed once it is written

    unwritable = str(tmp_path / "missing-directory" / "w.duckdb")
    with (
        pytest.raises(duckdb.Error),
        BackgroundLander(lambda: duckdb.connect(unwritable)) as lander,
    ):
        lander.put(first)
