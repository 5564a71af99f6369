"""The demo data generator: determinism, an exact manifest, the S3 layout, semantics, upload."""

from __future__ import annotations

import gc
import gzip
import io
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import boto3
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from contracts.usage_event import (
    OBJECT_REASONS,
    REASONS,
    SOURCE_HOUR,
    STATUSES,
    WIRE_FIELDS,
    validate_wire_events,
)
from tools.generator import (
    MODELS,
    GeneratedObject,
    cli,
    generate_month,
    generation_manifest,
    upload,
)
from tools.generator.generate import CANONICAL_LINE_REASONS, LINE_REASONS, TOKEN_FIELDS

MONTH, EVENTS, SEED = "2026-10", 3000, 7
KEY_RE = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/([^/]+)$")
PRICES = Path(__file__).resolve().parents[2] / "shared/reference/litellm_model_prices_2026-11.json"


@pytest.fixture(scope="module")
def month() -> tuple[list[GeneratedObject], dict]:
    generated = generate_month(MONTH, EVENTS, SEED, shapes="canonical")
    objects = list(generated)
    return objects, generated.manifest


def _text(value) -> str | None:
    """What DuckDB's ``json->>'$.field'`` yields for a JSON value."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


def _read(objects: list[GeneratedObject]) -> dict:
    """Read the objects as a pipeline would: records with their key hour, and object verdicts."""
    records: list[dict] = []  # one per line or parquet row of a readable object
    verdicts: Counter = Counter()
    for obj in objects:
        day, hour, name = KEY_RE.match(obj.key).groups()
        source_hour = datetime.fromisoformat(f"{day}T{hour}:00:00+00:00")
        if name.endswith(".parquet"):
            try:
                rows = pq.read_table(io.BytesIO(obj.body)).to_pylist()
            except Exception:
                verdicts["unreadable_object"] += 1
                continue
            verdicts["parquet"] += 1
            for row in rows:
                content = json.dumps(row, sort_keys=True)
                records.append({"hour": source_hour, "content": content, "fields": row})
        elif name.endswith((".jsonl", ".jsonl.gz")):
            try:
                body = gzip.decompress(obj.body) if name.endswith(".gz") else obj.body
                text = body.decode("utf-8")
            except (OSError, UnicodeDecodeError):
                verdicts["unreadable_object"] += 1
                continue
            verdicts["jsonl.gz" if name.endswith(".gz") else "jsonl"] += 1
            assert text.endswith("\n")
            for line in text[:-1].split("\n"):
                try:
                    fields = json.loads(line)
                except json.JSONDecodeError:
                    fields = None
                if not isinstance(fields, dict):
                    fields = None
                records.append({"hour": source_hour, "content": line, "fields": fields})
        else:
            verdicts["unsupported_format"] += 1
    return {"records": records, "verdicts": verdicts}


def _classify(records: list[dict]) -> list[str | None]:
    """The quarantine reason of each record (None: valid), via the contract's validation."""
    reasons: list[str | None] = ["invalid_json" if r["fields"] is None else None for r in records]
    parsed = [i for i, r in enumerate(records) if r["fields"] is not None]
    wire = pl.DataFrame(
        {
            **{
                f: pl.Series([_text(records[i]["fields"].get(f)) for i in parsed], dtype=pl.String)
                for f in WIRE_FIELDS
            },
            SOURCE_HOUR: pl.Series([records[i]["hour"] for i in parsed]).dt.cast_time_unit("us"),
        }
    )
    _, failures = validate_wire_events(wire)
    for row, codes in zip(failures["row"], failures["reason_codes"], strict=True):
        assert len(codes) == 1, f"line triggers {codes}: {records[parsed[row]]['content']}"
        reasons[parsed[row]] = codes[0]
    return reasons


@pytest.fixture(scope="module")
def lines(month) -> dict:
    objects, _ = month
    read = _read(objects)
    read["reasons"] = _classify(read["records"])
    read["valid"] = [r for r, why in zip(read["records"], read["reasons"], strict=True) if not why]
    return read


def _count(value) -> int:
    return 0 if value is None else int(value)


def test_same_month_events_and_seed_give_the_same_keys_and_bytes(month):
    objects, manifest = month
    again = generate_month(MONTH, EVENTS, SEED, shapes="canonical")
    assert [(o.key, o.body) for o in again] == [(o.key, o.body) for o in objects]
    assert again.manifest == manifest
    other_seed = [o.body for o in generate_month(MONTH, EVENTS, SEED + 1, shapes="canonical")]
    assert other_seed != [o.body for o in objects]


def test_manifest_is_known_without_rendering_and_only_after_generation(month):
    _, manifest = month
    assert generation_manifest(MONTH, EVENTS, SEED, shapes="canonical") == manifest
    with pytest.raises(RuntimeError):
        generate_month(MONTH, EVENTS, SEED).manifest  # noqa: B018


def test_manifest_counts_every_line_category_exactly(month, lines):
    _, manifest = month
    valid = lines["valid"]
    ids = Counter(r["fields"]["event_id"] for r in valid)
    assert manifest["lines"] == {
        "total": len(lines["records"]),
        "valid_unique": len(ids),
        "duplicate": len(valid) - len(ids),
        "malformed": sum(1 for why in lines["reasons"] if why),
    }
    assert manifest["lines"]["valid_unique"] == EVENTS
    assert manifest["lines"]["total"] == 3033
    assert manifest["lines"]["duplicate"] == 24
    reasons = Counter(why for why in lines["reasons"] if why)
    assert manifest["malformed_by_reason"] == {
        code: reasons[code] for code in CANONICAL_LINE_REASONS
    }


def test_every_line_level_reason_appears_at_least_once(month):
    _, manifest = month
    assert list(manifest["malformed_by_reason"]) == list(CANONICAL_LINE_REASONS)
    assert all(n >= 1 for n in manifest["malformed_by_reason"].values())
    line_reasons = set(REASONS) - set(OBJECT_REASONS)
    assert set(CANONICAL_LINE_REASONS) <= line_reasons
    if "usage_not_reported" in REASONS:  # the producer shapes' reasons (issue 14)
        assert set(LINE_REASONS) == line_reasons
    big = generation_manifest(MONTH, 200_000, SEED, shapes="canonical")
    assert big["lines"]["malformed"] == 600  # 0.3% of the events
    assert big["lines"]["valid_unique"] == 200_000


def test_manifest_counts_objects_by_format_and_verdict(month, lines):
    objects, manifest = month
    verdicts = lines["verdicts"]
    assert manifest["objects"] == {
        "total": len(objects),
        "jsonl.gz": verdicts["jsonl.gz"],
        "jsonl": verdicts["jsonl"],
        "parquet": verdicts["parquet"],
        "unreadable_object": 2,
        "unsupported_format": 1,
    }
    assert verdicts["unreadable_object"] == 2
    assert verdicts["unsupported_format"] == 1
    keys = {o.key for o in objects}
    assert {s["key"] for s in manifest["special_objects"]} <= keys


def test_manifest_token_sums_equal_the_valid_unique_events(month, lines):
    _, manifest = month
    unique = {r["fields"]["event_id"]: r["fields"] for r in lines["valid"]}
    assert manifest["tokens"] == {
        f: sum(_count(e.get(f)) for e in unique.values()) for f in TOKEN_FIELDS
    }
    by_customer = Counter(e["customer_id"] for e in unique.values())
    assert {c: v["events"] for c, v in manifest["by_customer"].items()} == dict(by_customer)
    for model, sums in manifest["by_model"].items():
        events = [e for e in unique.values() if e["model"] == model]
        assert sums["events"] == len(events)
        assert sums["input_tokens"] == sum(_count(e["input_tokens"]) for e in events)
    statuses = Counter(e.get("status") or "success" for e in unique.values())
    assert manifest["valid_by_status"] == {s: statuses[s] for s in STATUSES}


def test_duplicates_are_exact_resends_of_a_valid_event(lines):
    first: dict[str, str] = {}
    for r in lines["valid"]:
        event_id = r["fields"]["event_id"]
        assert first.setdefault(event_id, r["content"]) == r["content"]


def test_malformed_lines_have_their_own_event_ids(lines):
    valid_ids = {r["fields"]["event_id"] for r in lines["valid"]}
    bad_ids = [
        r["fields"]["event_id"]
        for r, why in zip(lines["records"], lines["reasons"], strict=True)
        if why and why != "invalid_json"
    ]
    assert len(bad_ids) == len(set(bad_ids)) == 8
    assert not valid_ids & set(bad_ids)
    assert all(re.fullmatch(r"evt_[0-9a-f]{16}", i) for i in valid_ids | set(bad_ids))


def test_keys_follow_the_layout_and_valid_events_sit_in_their_key_hour(month, lines):
    objects, _ = month
    for obj in objects:
        day, _, name = KEY_RE.match(obj.key).groups()
        assert day.startswith(MONTH)
        assert re.fullmatch(r"part-\d{4}\.(jsonl\.gz|jsonl|parquet)|notes\.csv", name)
    for r in lines["valid"]:
        ts = datetime.fromisoformat(r["fields"]["timestamp"].replace("Z", "+00:00"))
        assert ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0) == r["hour"]


def test_valid_events_keep_the_token_semantics(lines):
    unique = {r["fields"]["event_id"]: r["fields"] for r in lines["valid"]}.values()
    known = set(MODELS)
    for e in unique:
        n = {f: _count(e.get(f)) for f in TOKEN_FIELDS}
        assert n["cached_input_tokens"] + n["cache_write_tokens"] <= n["input_tokens"] <= 10**6
        assert n["reasoning_tokens"] <= n["output_tokens"]
        assert (e["provider"], e["model"]) in known
        if e["provider"] in ("anthropic", "aws.bedrock"):
            assert e.get("reasoning_tokens") is None
        else:
            assert e.get("cache_write_tokens") is None
        if e.get("status") in ("failed", "retried"):
            assert n["output_tokens"] == 0


def test_retries_share_a_request_group_and_agent_runs_share_a_trace(lines):
    unique = list({r["fields"]["event_id"]: r["fields"] for r in lines["valid"]}.values())
    groups: dict[str, list[dict]] = {}
    for e in unique:
        if e.get("request_group_id"):
            groups.setdefault(e["request_group_id"], []).append(e)
    retried = [g for g in groups.values() if len(g) > 1]
    assert retried
    for group in retried:
        attempts = sorted(_count(e.get("attempt") or 1) for e in group)
        assert attempts == list(range(1, len(group) + 1))
        assert len({e["customer_id"] for e in group}) == 1
    traces = Counter(e["trace_id"] for e in unique if e.get("trace_id"))
    assert max(traces.values()) >= 5
    assert all(e["feature"] == "agent" for e in unique if e.get("trace_id"))


def test_producers_vary_like_real_ones(lines):
    unique = list({r["fields"]["event_id"]: r["fields"] for r in lines["valid"]}.values())
    stamps = [e["timestamp"] for e in unique]
    assert sum(s.endswith("Z") for s in stamps) > 0.5 * len(stamps)
    assert any(re.search(r"[+-]\d{2}:\d{2}$", s) for s in stamps)
    assert any(isinstance(e["input_tokens"], str) for e in unique)
    assert any("sdk_version" in e for e in unique)
    assert any(isinstance(e.get("metadata"), dict) for e in unique)
    assert {e.get("status") for e in unique} >= {"success", "failed", "retried", "cancelled"}
    assert {e["provider"] for e in unique} == {"openai", "anthropic", "gcp.gemini", "aws.bedrock"}
    sizes = Counter(e["customer_id"] for e in unique).most_common()
    assert sizes[0][1] > 10 * sizes[-1][1]


def test_models_exist_in_the_litellm_price_table():
    if not PRICES.exists():
        pytest.skip(f"reference price table not at {PRICES}")
    table = json.loads(PRICES.read_text())
    assert [m for _, m in MODELS if m not in table] == []


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    yield endpoint, boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    server.stop()


def _listed(client, bucket: str, prefix: str) -> dict[str, int]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out |= {o["Key"]: o["Size"] for o in page.get("Contents", [])}
    return out


def test_upload_puts_exactly_the_given_objects(month, s3):
    objects, manifest = month
    _, client = s3
    client.create_bucket(Bucket="usage-test")
    # Two days plus the special objects keep the moto round trips (~8 ms each) few.
    specials = {s["key"] for s in manifest["special_objects"]}
    chosen = [
        o
        for o in objects
        if o.key.startswith(("dt=2026-10-01/", "dt=2026-10-02/")) or o.key in specials
    ]
    assert {o.key.rsplit(".", 1)[-1] for o in chosen} == {"gz", "jsonl", "parquet", "csv"}
    result = upload(client, "usage-test", "usage/", iter(chosen), max_workers=4)
    assert result == {"objects": len(chosen), "bytes": sum(len(o.body) for o in chosen)}
    listed = _listed(client, "usage-test", "")
    assert listed == {f"usage/{o.key}": len(o.body) for o in chosen}
    for o in chosen[:3]:
        body = client.get_object(Bucket="usage-test", Key=f"usage/{o.key}")["Body"].read()
        assert body == o.body


def test_cli_creates_the_bucket_uploads_and_writes_the_manifest(s3, tmp_path, capsys):
    endpoint, client = s3
    manifest_path = tmp_path / "manifest.json"
    argv = ["--month", "2026-02", "--events", "50", "--seed", "3", "--bucket", "fresh"]
    argv += ["--prefix", "raw", "--endpoint-url", endpoint, "--manifest", str(manifest_path)]
    assert cli.main([*argv, "--shapes", "canonical"]) == 0
    manifest = json.loads(manifest_path.read_text())
    assert manifest == generation_manifest("2026-02", 50, 3, shapes="canonical")
    keys = _listed(client, "fresh", "raw/")
    assert len(keys) == manifest["objects"]["total"]
    assert all(KEY_RE.match(k.removeprefix("raw/")) for k in keys)
    assert "50 valid unique" in capsys.readouterr().out


def test_cli_writes_files_under_out_dir(tmp_path):
    assert cli.main(["--month", "2026-02", "--events", "200", "--out-dir", str(tmp_path)]) == 0
    files = {
        p.relative_to(tmp_path / "usage").as_posix() for p in tmp_path.rglob("*") if p.is_file()
    }
    assert files == {o.key for o in generate_month("2026-02", 200)}


def test_every_malformation_variant_triggers_exactly_its_own_reason():
    from tools.generator import generate as g

    mp, customers = g._plan_month(MONTH, 50_000, SEED, "canonical"), g._customers(SEED)
    hp = g._plan_hour(customers, mp, 14)
    pairs = [
        (r, v)
        for r, code in enumerate(CANONICAL_LINE_REASONS)
        for v in range(len(g._VARIANTS[code]))
    ]
    hp.bad_reason[:] = -1
    hp.bad_reason[: len(pairs)] = [r for r, _ in pairs]
    hp.bad_variant[: len(pairs)] = [v for _, v in pairs]
    hp.formats = [1] * len(hp.formats)  # every object plain JSON lines
    hp.dup_src = hp.dup_obj = hp.dup_delay = hp.dup_src[:0]
    objects = list(g._render_chunk(customers, mp, [hp], g._Ids(SEED)))
    reasons = Counter(_classify(_read(objects)["records"]))
    expected = Counter(g.LINE_REASONS[r] for r, _ in pairs)
    assert reasons == {None: len(hp.bad_reason) - len(pairs), **expected}
    assert len(pairs) == 27


# ---------------------------------------------------------------------------------------------
# Producer shapes (issue 14): a mixed month, read by ingestion's own routing.


@pytest.fixture(scope="module")
def mixed():
    from orchestration.defs.ingestion.parsing import HourInput, S3Object, route_hours

    generated = generate_month(MONTH, EVENTS, SEED)
    hours: dict[datetime, list[GeneratedObject]] = {}
    for obj in generated:
        day, hour, _ = KEY_RE.match(obj.key).groups()
        hours.setdefault(datetime.fromisoformat(f"{day}T{hour}:00:00+00:00"), []).append(obj)
    inputs = [
        HourInput(h, [S3Object(o.key, "etag", len(o.body)) for o in objs], [o.body for o in objs])
        for h, objs in sorted(hours.items())
    ]
    return generated.manifest, route_hours(inputs)


def test_a_mixed_month_writes_every_shape_and_a_few_quarantine_cases_of_each(mixed):
    from tools.generator import shapes

    manifest, _ = mixed
    assert manifest["shapes_mode"] == "mixed"
    assert set(manifest["shapes"]) == set(shapes.REPORTED)
    canonical = manifest["shapes"]["canonical"]["valid"]
    assert 0.35 < canonical / manifest["lines"]["valid_unique"] < 0.55
    for name in ("usage_not_reported", "ambiguous_format", "unrecognized_format",
                 "unknown_token_type"):  # fmt: skip
        assert manifest["malformed_by_reason"][name] >= 2
    shaped_bad = (
        sum(
            c["quarantined"] for n, c in manifest["shapes"].items() if n not in shapes.REPORTED[-4:]
        )
        - manifest["shapes"]["canonical"]["quarantined"]
    )
    assert shaped_bad >= 5  # contract faults sent in native fields
    # One attempt per per-token-type pair of lines: it lands as two events, nothing else does.
    assert (
        manifest["lines"]["valid_unique"]
        == EVENTS + manifest["shapes"]["cloudevents:token_type"]["valid"] // 2
    )


def test_a_mixed_month_lands_through_ingestion_exactly_as_its_manifest_says(mixed):
    manifest, batch = mixed
    lines = batch.quarantine.filter(pl.col("line_number").is_not_null())
    assert batch.valid.height == manifest["lines"]["valid_unique"]
    assert batch.duplicates.height == manifest["lines"]["duplicate"]
    assert lines.height == manifest["lines"]["malformed"]
    assert (lines["reason_codes"].list.len() == 1).all()  # one reason per malformed line
    reasons = Counter(codes[0] for codes in lines["reason_codes"])
    assert dict(reasons) == {k: v for k, v in manifest["malformed_by_reason"].items() if v}
    for field, total in {**manifest["tokens"], **manifest["subset_tokens"]}.items():
        assert int(batch.valid[field].fill_null(0).sum()) == total, field
    formats = batch.formats.group_by("source_format").agg(
        pl.col("valid_count", "duplicate_count", "quarantined_count").sum()
    )
    assert {name: (v, d, q) for name, v, d, q in formats.rows()} == {
        name: (c["valid"], c["duplicate"], c["quarantined"])
        for name, c in manifest["shapes"].items()
    }
    assert int(batch.skipped["skipped"].sum()) == manifest["otlp_spans_skipped"]
    assert dict(batch.valid.group_by("status").len().rows()) == {
        s: n for s, n in manifest["valid_by_status"].items() if n
    }
    by_customer = batch.valid.group_by("customer_id").agg(pl.len(), pl.col("input_tokens").sum())
    assert {c: (n, i) for c, n, i in by_customer.rows()} == {
        c: (v["events"], v["input_tokens"]) for c, v in manifest["by_customer"].items()
    }


HOT_HOURS, HOT_EVENTS = 2, 800


@pytest.fixture(scope="module")
def hot_month() -> tuple[list[GeneratedObject], dict]:
    generated = generate_month(
        MONTH, EVENTS, SEED, shapes="canonical", hot_hours=HOT_HOURS, hot_hour_events=HOT_EVENTS
    )
    objects = list(generated)
    return objects, generated.manifest


def test_hot_hours_hold_their_events_in_one_gzip_object_each(hot_month):
    objects, manifest = hot_month
    assert len(manifest["hot_hours"]) == HOT_HOURS
    specials = {s["key"] for s in manifest["special_objects"]}
    for prefix in manifest["hot_hours"]:
        regular = [o for o in objects if o.key.startswith(prefix + "/") and o.key not in specials]
        assert [o.key for o in regular] == [f"{prefix}/part-0000.jsonl.gz"]
        read = _read(regular)
        reasons = _classify(read["records"])
        valid = [r for r, why in zip(read["records"], reasons, strict=True) if not why]
        assert len({r["fields"]["event_id"] for r in valid}) == HOT_EVENTS
    # The other hours share the rest: the month still holds exactly EVENTS valid events.
    read = _read(objects)
    reasons = _classify(read["records"])
    valid = [r for r, why in zip(read["records"], reasons, strict=True) if not why]
    ids = Counter(r["fields"]["event_id"] for r in valid)
    assert manifest["lines"] == {
        "total": len(read["records"]),
        "valid_unique": EVENTS,
        "duplicate": len(valid) - len(ids),
        "malformed": sum(1 for why in reasons if why),
    }
    assert len(ids) == EVENTS
    assert manifest["tokens"]["input_tokens"] == sum(
        _count(r["fields"].get("input_tokens"))
        for r in {r["fields"]["event_id"]: r for r in valid}.values()
    )


def test_hot_hour_manifest_is_known_without_rendering(hot_month):
    _, manifest = hot_month
    assert (
        generation_manifest(
            MONTH, EVENTS, SEED, "canonical", hot_hours=HOT_HOURS, hot_hour_events=HOT_EVENTS
        )
        == manifest
    )
    one = generation_manifest(
        MONTH,
        EVENTS,
        SEED,
        "canonical",
        hours=[_hour_index(manifest["hot_hours"][0])],
        hot_hours=HOT_HOURS,
        hot_hour_events=HOT_EVENTS,
    )
    assert one["lines"]["valid_unique"] == HOT_EVENTS


def _hour_index(prefix: str) -> int:
    day, hour = re.match(r"^dt=\d{4}-\d{2}-(\d{2})/hour=(\d{2})$", prefix).groups()
    return (int(day) - 1) * 24 + int(hour)


def test_a_month_without_hot_hours_is_unchanged_by_the_option(month):
    objects, manifest = month
    again = generate_month(MONTH, EVENTS, SEED, shapes="canonical", hot_hours=0, hot_hour_events=5)
    assert [(o.key, o.body) for o in again] == [(o.key, o.body) for o in objects]
    assert "hot_hours" not in manifest


def test_hot_hours_larger_than_the_month_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match=r"more than the month's 3,000: raise --events"):
        generate_month(MONTH, EVENTS, SEED, hot_hours=2, hot_hour_events=2000)


def test_processes_render_the_same_keys_bytes_and_manifest():
    one = generate_month(MONTH, 40_000, SEED, shapes="mixed", hot_hours=1, hot_hour_events=9000)
    two = generate_month(
        MONTH, 40_000, SEED, shapes="mixed", hot_hours=1, hot_hour_events=9000, workers=2
    )
    assert [(o.key, o.body) for o in two] == [(o.key, o.body) for o in one]
    assert two.manifest == one.manifest


def test_a_large_object_is_uploaded_in_parts_whole(s3, monkeypatch):
    from tools.generator import generate

    _, client = s3
    client.create_bucket(Bucket="usage-large")
    monkeypatch.setattr(generate, "MULTIPART_BYTES", 5 * 1024 * 1024)  # S3's smallest part
    body = np.random.default_rng(1).integers(0, 256, 12 * 1024 * 1024, dtype=np.uint8).tobytes()
    big = GeneratedObject("dt=2026-10-01/hour=00/part-0000.jsonl.gz", body)
    assert upload(client, "usage-large", "usage", [big]) == {"objects": 1, "bytes": len(body)}
    got = client.get_object(Bucket="usage-large", Key=f"usage/{big.key}")
    assert got["ContentType"] == "application/gzip"
    assert got["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    assert got["Body"].read() == body


# Hours rendered in windows (bounded memory): the same bytes as the one-pass rendering.


@pytest.fixture(scope="module")
def big_hours():
    """A mixed month with a hot hour of 6,000 events, its context, and hours to render."""
    from tools.generator import generate

    args = (MONTH, 30_000, SEED, "mixed", 1, 6000)
    mp, c, ids = generate._month_context(args)
    hot = sorted(mp.hot)[0]
    # Regular hours with a Parquet object beside JSON-lines ones (and resends between them).
    chosen, formats = [hot], set()
    for h in range(mp.hours):
        hp = generate._plan_hour(c, mp, h)
        if hp is not None and generate._PARQUET in hp.formats and not set(hp.formats) <= formats:
            chosen.append(h)
            formats |= set(hp.formats)
    return args, mp, c, ids, chosen


def test_an_hour_rendered_in_windows_has_the_one_pass_bytes(big_hours):
    from tools.generator import generate

    _, mp, c, ids, hours = big_hours
    formats = set()
    for hour in hours:
        hp = generate._plan_hour(c, mp, hour)
        formats |= {generate.FORMATS[f] for f in hp.formats}
        one = [(o.key, o.body) for o in generate._render_chunk(c, mp, [hp], ids)]
        for window in (1000, 37):  # windows cut through OTLP batches, resends and key ties
            sizes = generate._Sizes(window_rows=window)
            windows = generate._render_windows(c, mp, hp, ids, sizes)
            assert [(o.key, o.body) for o in windows] == one
    assert formats == {"jsonl.gz", "jsonl", "parquet"}
    hot = generate._plan_hour(c, mp, hours[0])
    assert len(hot.formats) == 1 and len(hot.bad_reason) >= 6000 and len(hot.dup_src)
    assert len(np.unique(hot.rows["shape"])) == len(generate.sh.SHAPES)  # every shape in it


def test_a_month_renders_the_same_whatever_its_window_and_spool_sizes(monkeypatch, tmp_path):
    from tools.generator import generate

    args = (MONTH, 30_000, SEED, "mixed")
    hot = {"hot_hours": 1, "hot_hour_events": 6000}
    one = generate_month(*args, **hot)
    expected = [(o.key, o.body) for o in one]
    monkeypatch.setattr(generate, "WINDOW_ROWS", 700)  # every hour above ~700 rows windowed
    monkeypatch.setattr(generate, "SPOOL_BYTES", 64 * 1024)  # the hot object in a file
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for workers in (1, 2):  # 2: the rendering processes hand their spool files over
        month = generate_month(*args, **hot, workers=workers)
        objects = list(month)
        assert [(o.key, o.body) for o in objects] == expected
        assert month.manifest == one.manifest
        (hot_object,) = [o for o in objects if o.spool is not None]
        assert hot_object.key.startswith(one.manifest["hot_hours"][0])
        assert hot_object.size == len(hot_object.body) > 64 * 1024
        spool = hot_object.spool
        assert spool.parent == tmp_path
        del objects, hot_object, month
        gc.collect()
        assert not spool.exists()  # removed with its object
    assert not list(tmp_path.iterdir())


def _peak_render_rss(mode: str) -> int:
    """Peak RSS (bytes) of rendering a 100k-event hot hour (in windows of 8,192 rows), over
    the RSS once it is planned, in a fresh process (VmHWM reset by /proc/self/clear_refs)."""
    script = f"""
import gc, re
from pathlib import Path
from tools.generator import generate as g
def status(k):
    return int(re.search(k + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
mp, c, ids = g._month_context(("{MONTH}", 130_000, {SEED}, "mixed", 1, 100_000))
hp = g._plan_hour(c, mp, sorted(mp.hot)[0])
gc.collect()
base = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
if "{mode}" == "one pass":
    objects = list(g._render_chunk(c, mp, [hp], ids))
else:
    objects = list(g._render_windows(c, mp, hp, ids, g._Sizes(window_rows=8192)))
print((status("VmHWM") - base) * 1024)
"""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_a_hot_hour_rendered_in_windows_takes_a_fraction_of_the_one_pass_memory():
    windows = _peak_render_rss("windows")  # first, so it cannot reuse freed memory
    one_pass = _peak_render_rss("one pass")
    # One pass holds every row's wire values and line (~4-5 KB a row); windows hold a window
    # of rows at a time (measured 2026-12-03: 117 MB against 471 MB).
    assert one_pass > 300 * 2**20
    assert windows < one_pass / 3


def test_a_spooled_object_is_uploaded_in_parts_from_its_file(s3, monkeypatch, tmp_path):
    from tools.generator import generate

    _, client = s3
    client.create_bucket(Bucket="usage-spooled")
    monkeypatch.setattr(generate, "MULTIPART_BYTES", 5 * 1024 * 1024)  # S3's smallest part
    body = np.random.default_rng(2).integers(0, 256, 11 * 1024 * 1024, dtype=np.uint8).tobytes()
    spool = tmp_path / "hot.part"
    spool.write_bytes(body)
    big = GeneratedObject("dt=2026-10-01/hour=00/part-0000.jsonl.gz", spool=spool)
    assert upload(client, "usage-spooled", "usage", [big]) == {"objects": 1, "bytes": len(body)}
    got = client.get_object(Bucket="usage-spooled", Key=f"usage/{big.key}")
    assert got["ETag"].strip('"').endswith("-3")
    assert got["Body"].read() == body
    kept = GeneratedObject("x.jsonl.gz", spool=spool, owned=False)
    del kept
    gc.collect()
    assert spool.exists()  # not the object's file: kept
    del big
    gc.collect()
    assert not spool.exists()  # the generator's file: removed with its object
