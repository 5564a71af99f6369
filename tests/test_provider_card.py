"""The provider cost card: exact prices from LiteLLM, the shipped CSV, versioning, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from orchestration.defs.rating.provider_card import (
    CARD_COLUMNS,
    PRICE_COLUMNS,
    PRICE_KEYS,
    card_rows,
    load_litellm,
    main,
    merge_versions,
    price_str,
    read_card,
    write_card,
)
from orchestration.generator.generate import MODELS

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "catalog" / "provider_costs.csv"
REFERENCE = REPO.parent / "shared" / "reference" / "litellm_model_prices_2026-11.json"
SOURCE = "litellm 1.110.2 model_prices_and_context_window_backup.json"

needs_reference = pytest.mark.skipif(
    not REFERENCE.exists(), reason="reference LiteLLM table not available (../shared)"
)


@pytest.fixture(scope="module")
def reference_rows() -> list[dict[str, str]]:
    if not REFERENCE.exists():
        pytest.skip("reference LiteLLM table not available (../shared)")
    return card_rows(load_litellm(REFERENCE), "2026-01-01", SOURCE)


@pytest.fixture(scope="module")
def reference_text_prices() -> dict:
    """The reference table with every JSON number kept as its exact text (Decimal)."""
    if not REFERENCE.exists():
        pytest.skip("reference LiteLLM table not available (../shared)")
    with open(REFERENCE, encoding="utf-8") as fh:
        return json.load(fh, parse_float=Decimal)


def by_pair(rows: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["provider"], r["model"]): r for r in rows}


def entry(provider: str, mode: str = "chat", **prices: float) -> dict:
    return {"litellm_provider": provider, "mode": mode, **prices}


def row(provider: str, model: str, effective_from: str, effective_to: str = "", **prices) -> dict:
    base = dict.fromkeys(CARD_COLUMNS, "")
    base.update(provider=provider, model=model, effective_from=effective_from)
    base.update(effective_to=effective_to, source=f"snap {effective_from}")
    base.update(prices)
    return base


# --- price conversion ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2.5e-06, "0.0000025"),
        (1e-05, "0.00001"),
        (1.25e-07, "0.000000125"),
        (3.3600000000000004e-07, "0.00000033600000000000004"),
        (Decimal("2.50E-6"), "0.0000025"),
        ("0.0000030", "0.000003"),
        (1.0, "1"),
        (10, "10"),
        (0, "0"),
        (0.0, "0"),
        (None, ""),
    ],
)
def test_price_str_is_exact_plain_decimal_without_trailing_zeros(value, expected):
    assert price_str(value) == expected


@pytest.mark.parametrize("value", [True, -1e-06, float("nan"), "abc", [1]])
def test_price_str_rejects_non_prices(value):
    with pytest.raises(ValueError):
        price_str(value)


# --- the reference snapshot ------------------------------------------------------------------


def test_gpt_4o_prices_match_the_json_text(reference_rows, reference_text_prices):
    gpt4o = by_pair(reference_rows)[("openai", "gpt-4o")]
    assert gpt4o["input_per_token"] == "0.0000025"
    assert gpt4o["output_per_token"] == "0.00001"
    assert gpt4o["cache_read_per_token"] == "0.00000125"
    assert gpt4o["cache_write_per_token"] == ""
    assert gpt4o["reasoning_per_token"] == ""
    src = reference_text_prices["gpt-4o"]
    assert Decimal(gpt4o["input_per_token"]) == src["input_cost_per_token"]
    assert Decimal(gpt4o["output_per_token"]) == src["output_cost_per_token"]
    assert Decimal(gpt4o["cache_read_per_token"]) == src["cache_read_input_token_cost"]


def test_claude_cache_write_price(reference_rows):
    sonnet = by_pair(reference_rows)[("anthropic", "claude-sonnet-4-5")]
    assert sonnet["input_per_token"] == "0.000003"
    assert sonnet["cache_write_per_token"] == "0.00000375"
    assert sonnet["cache_read_per_token"] == "0.0000003"
    assert sonnet["output_per_token"] == "0.000015"


def test_gemini_above_200k_prices_and_prefix_stripped(reference_rows):
    pro = by_pair(reference_rows)[("gcp.gemini", "gemini-2.5-pro")]
    assert pro["input_above_200k_per_token"] == "0.0000025"
    assert pro["output_above_200k_per_token"] == "0.000015"
    assert pro["cache_read_above_200k_per_token"] == "0.00000025"
    assert pro["cache_write_above_200k_per_token"] == ""
    flash = by_pair(reference_rows)[("gcp.gemini", "gemini-2.5-flash")]
    assert flash["reasoning_per_token"] == "0.0000025"
    assert not any(r["model"].startswith("gemini/") for r in reference_rows)


def test_bedrock_rows_are_unprefixed_anthropic_model_ids(reference_rows):
    bedrock = [r for r in reference_rows if r["provider"] == "aws.bedrock"]
    models = {r["model"] for r in bedrock}
    assert "anthropic.claude-sonnet-4-5-20250929-v1:0" in models
    assert "anthropic.claude-haiku-4-5-20251001-v1:0" in models
    assert all(m.startswith("anthropic.") and "/" not in m for m in models)
    sonnet = by_pair(bedrock)[("aws.bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0")]
    assert sonnet["input_above_200k_per_token"] == "0.000006"
    assert sonnet["cache_write_above_200k_per_token"] == "0.0000075"


def test_every_reference_price_equals_its_json_text(reference_rows, reference_text_prices):
    for r in reference_rows:
        if r["provider"] == "gcp.gemini" and f"gemini/{r['model']}" in reference_text_prices:
            key = f"gemini/{r['model']}"
        else:
            key = r["model"]
        src = reference_text_prices[key]
        for column, litellm_key in PRICE_KEYS.items():
            expected = src.get(litellm_key)
            if expected is None:
                assert r[column] == "", (key, column)
            else:
                assert Decimal(r[column]) == Decimal(expected), (key, column)
                assert "e" not in r[column].lower(), (key, column)


def test_reference_card_covers_the_four_providers_with_unique_pairs(reference_rows):
    pairs = [(r["provider"], r["model"]) for r in reference_rows]
    assert len(pairs) == len(set(pairs))
    assert pairs == sorted(pairs)
    assert {p for p, _ in pairs} == {"openai", "anthropic", "gcp.gemini", "aws.bedrock"}
    assert not any(m.startswith("ft:") for _, m in pairs)


# --- the shipped CSV -------------------------------------------------------------------------


def test_shipped_card_prices_every_generator_model():
    open_pairs = {(r["provider"], r["model"]) for r in read_card(SHIPPED) if not r["effective_to"]}
    assert [pair for pair in MODELS if pair not in open_pairs] == []


def test_shipped_card_format():
    raw = SHIPPED.read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    assert raw.split(b"\n", 1)[0].decode() == ",".join(CARD_COLUMNS)
    rows = read_card(SHIPPED)
    keys = [(r["provider"], r["model"], r["effective_from"]) for r in rows]
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    for r in rows:
        assert r["input_per_token"] and r["output_per_token"]
        for column in PRICE_COLUMNS:
            assert "e" not in r[column].lower()
            if r[column]:
                assert Decimal(r[column]) >= 0


@needs_reference
def test_shipped_card_is_what_card_rows_produces_from_the_reference(tmp_path, reference_rows):
    assert read_card(SHIPPED) == reference_rows
    regenerated = tmp_path / "card.csv"
    write_card(regenerated, reference_rows)
    assert regenerated.read_bytes() == SHIPPED.read_bytes()


# --- selection and determinism on synthetic input --------------------------------------------

SYNTHETIC = {
    "sample_spec": {"mode": "one of: chat, ...", "input_cost_per_token": 0.0},
    "gpt-x": entry("openai", input_cost_per_token=2.5e-06, output_cost_per_token=1e-05),
    "gpt-x-embed": entry("openai", mode="embedding", input_cost_per_token=1e-07),
    "ft:gpt-x": entry("openai", input_cost_per_token=3e-06, output_cost_per_token=1.2e-05),
    "gpt-no-output": entry("openai", input_cost_per_token=1e-06),
    "claude-y": entry(
        "anthropic",
        input_cost_per_token=3e-06,
        output_cost_per_token=1.5e-05,
        cache_creation_input_token_cost=3.75e-06,
        cache_read_input_token_cost=3e-07,
    ),
    "gemini/gem-z": entry(
        "gemini",
        input_cost_per_token=1.25e-06,
        output_cost_per_token=1e-05,
        output_cost_per_reasoning_token=1.1e-05,
        input_cost_per_token_above_200k_tokens=2.5e-06,
    ),
    "gem-z": entry("gemini", input_cost_per_token=9e-06, output_cost_per_token=9e-06),
    "gem-bare": entry("gemini", input_cost_per_token=1e-07, output_cost_per_token=4e-07),
    "gem-z-vertex": entry(
        "vertex_ai-language-models", input_cost_per_token=1e-06, output_cost_per_token=1e-06
    ),
    "anthropic.claude-y-v1:0": entry(
        "bedrock_converse", input_cost_per_token=3e-06, output_cost_per_token=1.5e-05
    ),
    "anthropic.claude-old-v1": entry(
        "bedrock", input_cost_per_token=8e-06, output_cost_per_token=2.4e-05
    ),
    "us.anthropic.claude-y-v1:0": entry(
        "bedrock_converse", input_cost_per_token=3.3e-06, output_cost_per_token=1.65e-05
    ),
    "bedrock/us-east-1/anthropic.claude-old-v1": entry(
        "bedrock", input_cost_per_token=8e-06, output_cost_per_token=2.4e-05
    ),
    "meta.llama-q": entry("bedrock", input_cost_per_token=1e-06, output_cost_per_token=1e-06),
}


def test_card_rows_selection_rules():
    rows = card_rows(SYNTHETIC, "2026-11-01", "test")
    assert [(r["provider"], r["model"]) for r in rows] == [
        ("anthropic", "claude-y"),
        ("aws.bedrock", "anthropic.claude-old-v1"),
        ("aws.bedrock", "anthropic.claude-y-v1:0"),
        ("gcp.gemini", "gem-bare"),
        ("gcp.gemini", "gem-z"),
        ("openai", "gpt-x"),
    ]
    assert rows[4] == {
        "provider": "gcp.gemini",
        "model": "gem-z",
        "effective_from": "2026-11-01",
        "effective_to": "",
        "input_per_token": "0.00000125",
        "output_per_token": "0.00001",
        "cache_read_per_token": "",
        "cache_write_per_token": "",
        "reasoning_per_token": "0.000011",
        "input_above_200k_per_token": "0.0000025",
        "output_above_200k_per_token": "",
        "cache_read_above_200k_per_token": "",
        "cache_write_above_200k_per_token": "",
        "source": "test",
    }
    assert list(rows[0]) == list(CARD_COLUMNS)
    assert rows[0]["cache_write_per_token"] == "0.00000375"


def test_card_is_deterministic_regardless_of_source_order(tmp_path):
    shuffled = dict(reversed(list(SYNTHETIC.items())))
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    write_card(first, card_rows(SYNTHETIC, "2026-11-01", "test"))
    write_card(second, card_rows(shuffled, "2026-11-01", "test"))
    assert first.read_bytes() == second.read_bytes()
    write_card(second, read_card(first))
    assert first.read_bytes() == second.read_bytes()


# --- versioning ------------------------------------------------------------------------------


def test_merge_closes_changed_row_and_opens_new_version():
    prices_before = {"input_per_token": "0.000001", "output_per_token": "0.000002"}
    prices_after = {"input_per_token": "0.0000008", "output_per_token": "0.000002"}
    old = [row("openai", "m", "2026-11-01", **prices_before)]
    new = [row("openai", "m", "2026-12-01", **prices_after)]
    assert merge_versions(old, new, "2026-12-01") == [
        row("openai", "m", "2026-11-01", "2026-12-01", **prices_before),
        row("openai", "m", "2026-12-01", **prices_after),
    ]


def test_merge_treats_a_newly_priced_column_as_a_change():
    old = [row("anthropic", "c", "2026-11-01", input_per_token="0.000003")]
    cache_write = {"cache_write_per_token": "0.00000375"}
    new = [row("anthropic", "c", "2026-12-01", input_per_token="0.000003", **cache_write)]
    merged = merge_versions(old, new, "2026-12-01")
    assert [(r["effective_from"], r["effective_to"]) for r in merged] == [
        ("2026-11-01", "2026-12-01"),
        ("2026-12-01", ""),
    ]


def test_merge_keeps_unchanged_open_row_as_is():
    old = [
        row("openai", "m", "2026-11-01", input_per_token="0.000001", output_per_token="0.000002")
    ]
    new = [row("openai", "m", "2026-12-01", input_per_token="0.0000010", output_per_token="2E-6")]
    assert merge_versions(old, new, "2026-12-01") == old


def test_merge_keeps_models_that_vanished_from_the_source():
    old = [
        row("openai", "gone", "2026-11-01", input_per_token="0.000005"),
        row("openai", "m", "2026-11-01", input_per_token="0.000001"),
    ]
    new = [row("openai", "m", "2026-12-01", input_per_token="0.000001")]
    assert merge_versions(old, new, "2026-12-01") == old


def test_merge_adds_new_models_and_leaves_closed_rows_alone():
    old = [
        row("openai", "m", "2026-10-01", "2026-11-01", input_per_token="0.000002"),
        row("openai", "m", "2026-11-01", input_per_token="0.000001"),
    ]
    new = [
        row("gcp.gemini", "g", "2026-12-01", input_per_token="0.0000003"),
        row("openai", "m", "2026-12-01", input_per_token="0.000001"),
    ]
    assert merge_versions(old, new, "2026-12-01") == [
        row("gcp.gemini", "g", "2026-12-01", input_per_token="0.0000003"),
        *old,
    ]


def test_merge_refuses_to_close_a_row_at_or_before_its_start():
    old = [row("openai", "m", "2026-12-01", input_per_token="0.000001")]
    new = [row("openai", "m", "2026-12-01", input_per_token="0.000002")]
    with pytest.raises(ValueError, match="cannot be closed"):
        merge_versions(old, new, "2026-12-01")


def test_merge_refuses_rows_of_another_date_and_two_open_versions():
    old = [row("openai", "m", "2026-11-01", input_per_token="0.000001")]
    with pytest.raises(ValueError, match="expected 2026-12-01"):
        merge_versions(old, [row("openai", "m", "2026-11-15")], "2026-12-01")
    with pytest.raises(ValueError, match="two open rows"):
        merge_versions(old + old, [], "2026-12-01")


# --- the CLI ---------------------------------------------------------------------------------


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_cli_snapshot_then_append_round_trip(tmp_path):
    out = tmp_path / "catalog" / "provider_costs.csv"
    nov = _write_json(tmp_path / "nov.json", SYNTHETIC)
    assert main(["--litellm", str(nov), "--out", str(out), "--source-label", "nov"]) == 0
    snapshot = read_card(out)
    assert snapshot == card_rows(SYNTHETIC, "2026-11-01", "nov")

    dec_data = {k: dict(v) for k, v in SYNTHETIC.items() if k != "anthropic.claude-old-v1"}
    dec_data["gpt-x"]["input_cost_per_token"] = 2e-06
    dec = _write_json(tmp_path / "dec.json", dec_data)
    argv = ["--litellm", str(dec), "--out", str(out), "--effective-from", "2026-12-01"]
    assert main([*argv, "--source-label", "dec", "--append"]) == 0
    rows = read_card(out)
    assert [(r["provider"], r["model"], r["effective_from"], r["effective_to"]) for r in rows] == [
        ("anthropic", "claude-y", "2026-11-01", ""),
        ("aws.bedrock", "anthropic.claude-old-v1", "2026-11-01", ""),
        ("aws.bedrock", "anthropic.claude-y-v1:0", "2026-11-01", ""),
        ("gcp.gemini", "gem-bare", "2026-11-01", ""),
        ("gcp.gemini", "gem-z", "2026-11-01", ""),
        ("openai", "gpt-x", "2026-11-01", "2026-12-01"),
        ("openai", "gpt-x", "2026-12-01", ""),
    ]
    assert rows[-1]["input_per_token"] == "0.000002" and rows[-1]["source"] == "dec"
    assert rows[-2]["input_per_token"] == "0.0000025" and rows[-2]["source"] == "nov"

    appended = out.read_bytes()
    assert main([*argv, "--source-label", "dec", "--append"]) == 0
    assert out.read_bytes() == appended  # appending the same snapshot again changes nothing

    assert main([*argv, "--source-label", "dec"]) == 0  # without --append: the snapshot alone
    assert read_card(out) == card_rows(dec_data, "2026-12-01", "dec")


def test_cli_runs_as_a_module(tmp_path):
    src = _write_json(tmp_path / "prices.json", SYNTHETIC)
    out = tmp_path / "card.csv"
    cmd = [sys.executable, "-m", "orchestration.defs.rating.provider_card"]
    cmd += ["--litellm", str(src), "--out", str(out), "--effective-from", "2026-11-01"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    assert "wrote 6 rows" in done.stdout
    assert "gpt-4o" in done.stderr  # warns that the demo's models are not priced
    assert read_card(out)[0]["source"] == SOURCE


def test_cli_rejects_a_bad_date(tmp_path):
    src = _write_json(tmp_path / "prices.json", SYNTHETIC)
    with pytest.raises(SystemExit):
        main(["--litellm", str(src), "--out", str(tmp_path / "c.csv"), "--effective-from", "12/1"])
