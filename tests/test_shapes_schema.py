"""The JSON Schema published for producers documents every accepted line shape (issue 14).

Every captured-shape fixture and every line the demo generator writes in a producer shape
validates against ``contracts/usage_event.schema.json`` in exactly one of its top-level
shapes; lines in no shape, or in two, do not.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import polars as pl
import pytest

from contracts.usage_event import SCHEMA_PATH
from tools.generator import generate_month

FIXTURES = Path(__file__).parent / "fixtures" / "shapes"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
TOP = [ref["$ref"].rsplit("/", 1)[1] for ref in SCHEMA["oneOf"]]


def _shapes_of(line: dict) -> list[str]:
    """The top-level definitions ``line`` validates against."""
    out = []
    for name in TOP:
        sub = {"$ref": f"#/$defs/{name}", "$defs": SCHEMA["$defs"]}
        if jsonschema.Draft202012Validator(sub).is_valid(line):
            out.append(name)
    return out


def test_the_schema_is_valid_json_schema_with_one_definition_per_shape():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert TOP == ["canonical", "envelope", "otlp", "litellm", "cloudevent"]
    defs = SCHEMA["$defs"]
    for native in ("openai_chat", "openai_responses", "openai_realtime", "anthropic_messages",
                   "gemini", "bedrock_converse"):  # fmt: skip
        assert {"$ref": f"#/$defs/{native}"} in defs["envelope"]["properties"]["response"]["anyOf"]
        assert "Maps to the canonical event as: input_tokens = " in defs[native]["description"]
    anthropic = defs["anthropic_messages"]["description"]
    assert "input_tokens = response.usage.input_tokens + cache_read_input_tokens" in anthropic


EXPECTED_TOP = {
    "canonical": "canonical",
    "openai_chat": "envelope",
    "openai_responses": "envelope",
    "openai_realtime": "envelope",
    "anthropic_messages": "envelope",
    "gemini": "envelope",
    "bedrock_converse": "envelope",
    "otlp": "otlp",
    "litellm": "litellm",
    "cloudevents": "cloudevent",
    "token_type": "cloudevent",
}


@pytest.mark.parametrize("shape", sorted(EXPECTED_TOP))
def test_every_captured_shape_fixture_validates_in_exactly_its_shape(shape):
    lines = (FIXTURES / f"{shape}.jsonl").read_text().splitlines()
    assert lines
    for text in lines:
        assert _shapes_of(json.loads(text)) == [EXPECTED_TOP[shape]], text


def test_lines_in_two_shapes_or_none_validate_in_none():
    both = json.loads((FIXTURES / "openai_chat.jsonl").read_text().splitlines()[0])
    both |= {"input_tokens": 10000, "output_tokens": 500}  # canonical counts and a response
    assert _shapes_of(both) == []
    bare = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "usage": {"prompt_tokens": 1}}
    assert _shapes_of(bare) == []


def test_every_generated_line_in_a_producer_shape_validates_in_exactly_one():
    """A mixed demo month: each valid line of each shape is in exactly one schema shape."""
    month = generate_month("2026-10", 3000, 7)
    found: dict[str, int] = {}
    for obj in month:
        if not obj.key.endswith((".jsonl", ".jsonl.gz")):
            continue
        try:
            text = (gzip.decompress(obj.body) if obj.key.endswith(".gz") else obj.body).decode()
        except (OSError, UnicodeDecodeError):
            continue  # the month's corrupt object
        for raw in text.splitlines():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue  # invalid_json lines
            shapes = _shapes_of(line)
            if len(shapes) == 1:
                found[shapes[0]] = found.get(shapes[0], 0) + 1
    manifest = month.manifest
    assert manifest["shapes_mode"] == "mixed"
    assert set(found) == set(TOP)
    # Per schema shape but canonical (Parquet rows are canonical too), the lines found lie
    # between the manifest's lines of valid records and all its lines (some malformed lines
    # are still well-formed, e.g. a cache read above the prompt).
    low, high = dict.fromkeys(TOP, 0), dict.fromkeys(TOP, 0)
    for name, counts in manifest["shapes"].items():
        if name not in EXPECTED_TOP and not name.startswith("cloudevents:"):
            continue  # lines quarantined before they have a shape
        top = "cloudevent" if name.startswith("cloudevents:") else EXPECTED_TOP[name]
        low[top] += counts["lines"] - counts["quarantined"]
        high[top] += counts["lines"]
    for top in TOP[1:]:
        assert low[top] <= found[top] <= high[top], (top, found, low, high)


def _readme_examples() -> list[str]:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("\n## Sending usage\n", 1)[1].split("\n## ", 1)[0]
    return [
        block.split("\n", 1)[1].rsplit("```", 1)[0].strip()
        for block in section.split("```json")[1:]
    ]


def test_the_readme_examples_of_sending_usage_land_and_validate_in_their_shape():
    from orchestration.defs.ingestion.parsing import HourInput, S3Object, route_hours

    examples = _readme_examples()
    assert len(examples) == 11  # one per shape (six native)
    for text in examples:
        assert len(_shapes_of(json.loads(text))) == 1, text
    body = ("\n".join(examples) + "\n").encode()
    key = "dt=2026-10-05/hour=07/part-0000.jsonl"
    hour = datetime(2026, 10, 5, 7, tzinfo=UTC)
    batch = route_hours([HourInput(hour, [S3Object(key, "etag", len(body))], [body])])
    assert batch.quarantine.height == 0
    assert batch.valid.height == 11
    worked = batch.valid.filter(pl.col("event_id") == "msg_01XF:1").row(0, named=True)
    assert (worked["input_tokens"], worked["cached_input_tokens"]) == (23_500, 20_000)
    assert (worked["cache_write_tokens"], worked["output_tokens"]) == (2_000, 800)
    gemini = batch.valid.filter(pl.col("event_id") == "U7yuaeTy:1").row(0, named=True)
    assert (gemini["output_tokens"], gemini["reasoning_tokens"]) == (1_600, 1_200)
