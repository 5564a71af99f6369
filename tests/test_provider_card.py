"""The provider cost card: exact prices from LiteLLM, the shipped CSV, versioning, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from contracts.catalog import CatalogError
from orchestration.defs.rating.catalog import read_provider_costs
from orchestration.defs.rating.provider_card import (
    CARD_COLUMNS,
    OPTIONAL_COLUMNS,
    PRICE_COLUMNS,
    card_problems,
    read_card,
    row_names,
)
from tools.generator.generate import MODELS
from tools.provider_card import (
    PRICE_KEYS,
    card_provider,
    card_rows,
    date_stripped,
    load_litellm,
    lookup,
    main,
    merge_versions,
    price_str,
    region_stripped,
    route_stripped,
    write_card,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "catalog" / "provider_costs.csv"
#: The project's reference material is ../shared (TOKENBILL_REFERENCE_DIR elsewhere, e.g. when
#: the checkout is a git worktree in another directory).
REFERENCE = (
    Path(os.environ.get("TOKENBILL_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
    / "litellm_model_prices_2026-11.json"
)
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
    assert flash["aliases"] == "gemini/gemini-2.5-flash"


def test_bedrock_region_variant_keeps_its_name_when_its_price_differs(reference_rows):
    rows = by_pair(reference_rows)
    sonnet = rows[("aws.bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0")]
    assert sonnet["input_above_200k_per_token"] == "0.000006"
    assert sonnet["cache_write_above_200k_per_token"] == "0.0000075"
    # global. costs the same: an alias; us. costs 10% more: its own row.
    assert sonnet["aliases"] == "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
    us = rows[("aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0")]
    assert (us["input_per_token"], us["output_per_token"]) == ("0.0000033", "0.0000165")


def test_every_reference_entry_is_on_the_card_at_its_own_prices(reference_text_prices):
    """The coverage promise: every chat/completion/responses entry with input and output
    prices is found, at exactly its prices, by its LiteLLM key or its route-stripped name
    under its card provider (the key alone fails only where another entry owns the key as
    its model: perplexity/sonar is the Agent API's model, chat's is sonar)."""
    rows = read_card(SHIPPED)
    names = {(r["provider"], name): r for r in rows for name in row_names(r)}
    covered = by_key = 0
    for key, entry in reference_text_prices.items():
        if entry.get("mode") not in ("chat", "completion", "responses"):
            continue
        if entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
            continue
        provider = card_provider(entry["litellm_provider"])
        want = {
            c: None if entry.get(k) is None else Decimal(entry[k]) for c, k in PRICE_KEYS.items()
        }

        def has_prices(row, want=want):
            return row is not None and all(
                (Decimal(row[c]) if row[c] else None) == want[c] for c in PRICE_COLUMNS
            )

        by_name = names.get((provider, key))
        stripped = names.get((provider, route_stripped(key, entry["litellm_provider"])))
        assert has_prices(by_name) or has_prices(stripped), key
        assert stripped is not None, key
        covered += 1
        by_key += has_prices(by_name)
    assert (covered, by_key) == (3536, 3535)


def test_reference_card_has_unique_names_and_no_overlaps(reference_rows):
    pairs = [(r["provider"], r["model"]) for r in reference_rows]
    assert len(pairs) == len(set(pairs)) == 3245
    assert pairs == sorted(pairs)
    assert card_problems(reference_rows) == []
    providers = {p for p, _ in pairs}
    assert {"openai", "anthropic", "gcp.gemini", "gcp.vertex_ai", "aws.bedrock"} <= providers
    assert {"azure.ai.openai", "deepseek", "mistral_ai", "x_ai", "fireworks_ai"} <= providers


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
    assert card_problems(rows) == []
    for r in rows:
        assert r["input_per_token"] and r["output_per_token"]
        assert r["aliases"].split() == sorted(set(r["aliases"].split()))
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


# --- normalised names, looked up as rating does (model or alias) ------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "row_model", "input_price", "output_price"),
    [
        # LiteLLM's route prefix is dropped: gemini/ names the same model.
        ("gcp.gemini", "gemini/gemini-2.5-flash", "gemini-2.5-flash", "0.0000003", "0.0000025"),
        ("gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash", "0.0000003", "0.0000025"),
        # Route prefix, then the us. geography (same price as the plain id).
        ("aws.bedrock", "bedrock/us.anthropic.claude-3-5-haiku-20241022-v1:0",
         "anthropic.claude-3-5-haiku-20241022-v1:0", "0.0000008", "0.000004"),
        ("aws.bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
         "anthropic.claude-sonnet-4-5-20250929-v1:0", "0.000003", "0.000015"),
        # us. of Sonnet 4.5 costs 10% more: it keeps its name.
        ("aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
         "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "0.0000033", "0.0000165"),
        # Azure: route prefix and the dated snapshot (same price as gpt-4o); the EU data zone
        # costs 10% more and keeps its name.
        ("azure.ai.openai", "azure/gpt-4o-2024-08-06", "gpt-4o", "0.0000025", "0.00001"),
        ("azure.ai.openai", "gpt-4o-2024-08-06", "gpt-4o", "0.0000025", "0.00001"),
        ("azure.ai.openai", "eu/gpt-4o", "eu/gpt-4o", "0.00000275", "0.000011"),
        ("openai", "gpt-4o-2024-08-06", "gpt-4o", "0.0000025", "0.00001"),
        # gpt-4o's first snapshot had other prices: not gpt-4o.
        ("openai", "gpt-4o-2024-05-13", "gpt-4o-2024-05-13", "0.000005", "0.000015"),
        ("anthropic", "claude-haiku-4-5-20251001", "claude-haiku-4-5", "0.000001", "0.000005"),
        # Providers the card used to leave out.
        ("deepseek", "deepseek-reasoner", "deepseek-reasoner", "0.00000028", "0.00000042"),
        ("deepseek", "deepseek/deepseek-reasoner", "deepseek-reasoner", "0.00000028",
         "0.00000042"),
        ("mistral_ai", "mistral/mistral-large-latest", "mistral-large-latest", "0.0000005",
         "0.0000015"),
        ("mistral_ai", "mistral-small-latest", "mistral-small-latest", "0.00000015",
         "0.0000006"),
        # A full key that is another entry's model stays that entry's (the Agent API's sonar).
        ("perplexity", "perplexity/sonar", "perplexity/sonar", "0.00000025", "0.0000025"),
        ("perplexity", "sonar", "sonar", "0.000001", "0.000001"),
    ],
)  # fmt: skip
def test_shipped_card_finds_normalised_names(provider, model, row_model, input_price, output_price):
    row = lookup(read_card(SHIPPED), provider, model, "2026-10-05")
    assert row is not None
    assert (row["model"], row["input_per_token"], row["output_per_token"]) == (
        row_model,
        input_price,
        output_price,
    )


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("anthropic", "claude-sonnet-4-7"),  # not in LiteLLM's table
        ("gemini", "gemini-2.5-flash"),  # LiteLLM's provider name, not OpenTelemetry's
        ("openai", "gemini-2.5-flash"),  # another provider's model
    ],
)
def test_shipped_card_has_no_price_for_unknown_names(provider, model):
    assert lookup(read_card(SHIPPED), provider, model, "2026-10-05") is None


@pytest.mark.parametrize(
    ("litellm_provider", "expected"),
    [
        ("gemini", "gcp.gemini"),
        ("vertex_ai-anthropic_models", "gcp.vertex_ai"),
        ("bedrock_converse", "aws.bedrock"),
        ("azure", "azure.ai.openai"),
        ("azure_ai", "azure.ai.inference"),
        ("mistral", "mistral_ai"),
        ("xai", "x_ai"),
        ("deepseek", "deepseek"),
        ("openrouter", "openrouter"),
        ("fireworks_ai", "fireworks_ai"),
    ],
)
def test_card_provider_is_the_opentelemetry_name(litellm_provider, expected):
    assert card_provider(litellm_provider) == expected


@pytest.mark.parametrize(
    ("key", "litellm_provider", "expected"),
    [
        ("gemini/gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
        ("vertex_ai/claude-sonnet-4-5@20250929", "vertex_ai-anthropic_models",
         "claude-sonnet-4-5@20250929"),
        ("bedrock/us.anthropic.claude-3-5-haiku-20241022-v1:0", "bedrock",
         "us.anthropic.claude-3-5-haiku-20241022-v1:0"),
        ("bedrock/invoke/anthropic.claude-3-5-sonnet-20240620-v1:0", "bedrock",
         "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ("azure/eu/gpt-4o-2024-08-06", "azure", "eu/gpt-4o-2024-08-06"),
        ("azure/gpt-35-turbo-instruct", "azure_text", "gpt-35-turbo-instruct"),
        ("openrouter/anthropic/claude-3.5-sonnet", "openrouter", "anthropic/claude-3.5-sonnet"),
        ("amazon-nova/nova-lite-v1", "amazon_nova", "nova-lite-v1"),
        ("deepseek-chat", "deepseek", "deepseek-chat"),
        ("meta-llama/llama-3", "groq", "meta-llama/llama-3"),  # not groq's route
    ],
)  # fmt: skip
def test_route_prefix_is_stripped(key, litellm_provider, expected):
    assert route_stripped(key, litellm_provider) == expected


@pytest.mark.parametrize(
    ("provider", "name", "expected"),
    [
        ("aws.bedrock", "us.anthropic.claude-haiku-4-5-20251001-v1:0",
         "anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("aws.bedrock", "eu.anthropic.claude-haiku-4-5-20251001-v1:0",
         "anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("aws.bedrock", "us-gov-west-1/anthropic.claude-sonnet-4-5-20250929-v1:0",
         "anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("aws.bedrock", "anthropic.claude-haiku-4-5-20251001-v1:0",
         "anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("azure.ai.openai", "eu/gpt-4o", "gpt-4o"),
        ("azure.ai.openai", "global-standard/gpt-4o", "gpt-4o"),
        ("openai", "us.gpt-4o", "us.gpt-4o"),  # only Bedrock and Azure have regions here
    ],
)  # fmt: skip
def test_region_is_stripped(provider, name, expected):
    assert region_stripped(provider, name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo-0125"),  # four digits: a version, not a date
        ("deepseek-r1-0528", "deepseek-r1-0528"),
    ],
)
def test_dated_snapshot_suffix_is_stripped(name, expected):
    assert date_stripped(name) == expected


# --- selection and determinism on synthetic input --------------------------------------------

SYNTHETIC = {
    "sample_spec": {"mode": "one of: chat, ...", "input_cost_per_token": 0.0},
    "gpt-x": entry("openai", input_cost_per_token=2.5e-06, output_cost_per_token=1e-05),
    "gpt-x-2026-01-15": entry("openai", input_cost_per_token=2.5e-06, output_cost_per_token=1e-05),
    "gpt-x-2025-05-13": entry("openai", input_cost_per_token=5e-06, output_cost_per_token=1.5e-05),
    "gpt-x-embed": entry("openai", mode="embedding", input_cost_per_token=1e-07),
    "gpt-x-image": entry("openai", mode="image_generation", input_cost_per_token=1e-07,
                         output_cost_per_token=1e-07),
    "ft:gpt-x": entry("openai", input_cost_per_token=3e-06, output_cost_per_token=1.2e-05),
    "gpt-no-output": entry("openai", input_cost_per_token=1e-06),
    "azure/gpt-x": entry("azure", input_cost_per_token=2.5e-06, output_cost_per_token=1e-05),
    "azure/eu/gpt-x-2026-01-15": entry(
        "azure", input_cost_per_token=2.5e-06, output_cost_per_token=1e-05
    ),
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
    "gemini/gem-bare": entry("gemini", input_cost_per_token=1e-07, output_cost_per_token=4e-07),
    "gem-z-vertex": entry(
        "vertex_ai-language-models",
        mode="completion",
        input_cost_per_token=1e-06,
        output_cost_per_token=1e-06,
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
    "meta.llama-q": entry(
        "bedrock", mode="responses", input_cost_per_token=1e-06, output_cost_per_token=1e-06
    ),
}  # fmt: skip


def test_card_rows_selection_and_normalisation_rules():
    rows = card_rows(SYNTHETIC, "2026-11-01", "test")
    assert [(r["provider"], r["model"], r["aliases"]) for r in rows] == [
        ("anthropic", "claude-y", ""),
        # Same prices under a region path: an alias (full key and route-stripped name).
        ("aws.bedrock", "anthropic.claude-old-v1",
         "bedrock/us-east-1/anthropic.claude-old-v1 us-east-1/anthropic.claude-old-v1"),
        ("aws.bedrock", "anthropic.claude-y-v1:0", ""),
        ("aws.bedrock", "meta.llama-q", ""),
        # Other prices under a geography prefix: its own row.
        ("aws.bedrock", "us.anthropic.claude-y-v1:0", ""),
        # The EU zone's dated snapshot costs what the plain name does: region and date go.
        ("azure.ai.openai", "gpt-x", "azure/eu/gpt-x-2026-01-15 azure/gpt-x eu/gpt-x-2026-01-15"),
        ("gcp.gemini", "gem-bare", "gemini/gem-bare"),
        # gem-z and gemini/gem-z disagree: the bare key keeps the name, the routed one its key.
        ("gcp.gemini", "gem-z", ""),
        ("gcp.gemini", "gemini/gem-z", ""),
        ("gcp.vertex_ai", "gem-z-vertex", ""),
        ("openai", "ft:gpt-x", ""),
        # A dated snapshot at the same prices is an alias; at other prices a row of its own.
        ("openai", "gpt-x", "gpt-x-2026-01-15"),
        ("openai", "gpt-x-2025-05-13", ""),
    ]  # fmt: skip
    gem_z = by_pair(rows)[("gcp.gemini", "gemini/gem-z")]
    assert gem_z == {
        "provider": "gcp.gemini",
        "model": "gemini/gem-z",
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
        "aliases": "",
    }
    assert list(rows[0]) == list(CARD_COLUMNS)
    assert rows[0]["cache_write_per_token"] == "0.00000375"
    assert by_pair(rows)[("gcp.gemini", "gem-z")]["input_per_token"] == "0.000009"


def test_card_is_deterministic_regardless_of_source_order(tmp_path):
    shuffled = dict(reversed(list(SYNTHETIC.items())))
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    write_card(first, card_rows(SYNTHETIC, "2026-11-01", "test"))
    write_card(second, card_rows(shuffled, "2026-11-01", "test"))
    assert first.read_bytes() == second.read_bytes()
    write_card(second, read_card(first))
    assert first.read_bytes() == second.read_bytes()


# --- one row per name at a time, checked at load ----------------------------------------------


def test_card_problems_name_two_rows_claiming_one_name():
    rows = [
        row("openai", "gpt-x", "2026-01-01", aliases="gpt-x-2026-01-15"),
        row("openai", "gpt-x-2026-01-15", "2026-06-01"),
        row("openai", "gpt-y", "2026-01-01", "2026-06-01", aliases="y"),
        row("openai", "gpt-y2", "2026-06-01", aliases="y"),  # after gpt-y: fine
        row("anthropic", "gpt-x", "2026-01-01"),  # another provider: fine
    ]
    assert card_problems(rows) == [
        (
            "line 3",
            "model/aliases",
            "openai/gpt-x-2026-01-15 is also named by line 2 from 2026-01-01: each name of a "
            "provider belongs to one row at a time",
        )
    ]


def test_catalog_load_refuses_a_card_naming_a_model_twice(tmp_path):
    card = tmp_path / "provider_costs.csv"
    write_card(
        card,
        [
            row("openai", "gpt-x", "2026-01-01", aliases="gpt-x-2026-01-15",
                input_per_token="0.000001", output_per_token="0.000002"),
            row("openai", "gpt-x-2026-01-15", "2026-01-01",
                input_per_token="0.000003", output_per_token="0.000004"),
        ],
    )  # fmt: skip
    with pytest.raises(CatalogError) as info:
        read_provider_costs(card)
    assert [str(p) for p in info.value.problems] == [
        "provider_costs.csv: line 3: model/aliases: openai/gpt-x-2026-01-15 is also named by "
        "line 2 from 2026-01-01: each name of a provider belongs to one row at a time"
    ]


def test_a_hand_written_card_may_leave_out_the_aliases_column(tmp_path):
    card = tmp_path / "provider_costs.csv"
    columns = [c for c in CARD_COLUMNS if c not in OPTIONAL_COLUMNS]
    card.write_text(",".join(columns) + "\nacme,m,2026-01-01,,0.001,0.01,,,,,,,,hand\n")
    assert read_card(card)[0]["aliases"] == ""
    frame = read_provider_costs(card)
    assert frame.select("provider", "model", "aliases").rows() == [("acme", "m", "")]


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


def test_merge_opens_a_new_version_when_only_the_aliases_change():
    prices = {"input_per_token": "0.000001", "output_per_token": "0.000002"}
    old = [row("openai", "m", "2026-11-01", aliases="m-2026-01-15", **prices)]
    new = [row("openai", "m", "2026-12-01", aliases="m-2026-01-15 m-2026-11-20", **prices)]
    assert merge_versions(old, new, "2026-12-01") == [
        row("openai", "m", "2026-11-01", "2026-12-01", aliases="m-2026-01-15", **prices),
        row("openai", "m", "2026-12-01", aliases="m-2026-01-15 m-2026-11-20", **prices),
    ]


def test_merge_closes_a_vanished_row_whose_name_became_an_alias():
    prices = {"input_per_token": "0.000001", "output_per_token": "0.000002"}
    old = [
        row("openai", "m", "2026-11-01", **prices),
        row("openai", "m-2026-01-15", "2026-11-01", input_per_token="0.000009"),
    ]
    new = [row("openai", "m", "2026-12-01", aliases="m-2026-01-15", **prices)]
    merged = merge_versions(old, new, "2026-12-01")
    assert [(r["model"], r["effective_from"], r["effective_to"]) for r in merged] == [
        ("m", "2026-11-01", "2026-12-01"),
        ("m", "2026-12-01", ""),
        ("m-2026-01-15", "2026-11-01", "2026-12-01"),
    ]
    assert card_problems(merged) == []


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
        # Gone from December's table, but its alias became a row of its own: closed.
        ("aws.bedrock", "anthropic.claude-old-v1", "2026-11-01", "2026-12-01"),
        ("aws.bedrock", "anthropic.claude-y-v1:0", "2026-11-01", ""),
        ("aws.bedrock", "meta.llama-q", "2026-11-01", ""),
        ("aws.bedrock", "us-east-1/anthropic.claude-old-v1", "2026-12-01", ""),
        ("aws.bedrock", "us.anthropic.claude-y-v1:0", "2026-11-01", ""),
        ("azure.ai.openai", "gpt-x", "2026-11-01", ""),
        ("gcp.gemini", "gem-bare", "2026-11-01", ""),
        ("gcp.gemini", "gem-z", "2026-11-01", ""),
        ("gcp.gemini", "gemini/gem-z", "2026-11-01", ""),
        ("gcp.vertex_ai", "gem-z-vertex", "2026-11-01", ""),
        ("openai", "ft:gpt-x", "2026-11-01", ""),
        # gpt-x got cheaper: a new version, without its dated alias, which kept the old
        # price and is a row of its own from December.
        ("openai", "gpt-x", "2026-11-01", "2026-12-01"),
        ("openai", "gpt-x", "2026-12-01", ""),
        ("openai", "gpt-x-2025-05-13", "2026-11-01", ""),
        ("openai", "gpt-x-2026-01-15", "2026-12-01", ""),
    ]
    assert card_problems(rows) == []
    assert lookup(rows, "openai", "gpt-x-2026-01-15", "2026-11-30")["model"] == "gpt-x"
    assert lookup(rows, "openai", "gpt-x-2026-01-15", "2026-12-01")["model"] == "gpt-x-2026-01-15"
    gpt_x = [r for r in rows if r["model"] == "gpt-x" and r["provider"] == "openai"]
    assert gpt_x[1]["input_per_token"] == "0.000002" and gpt_x[1]["source"] == "dec"
    assert gpt_x[0]["input_per_token"] == "0.0000025" and gpt_x[0]["source"] == "nov"

    appended = out.read_bytes()
    assert main([*argv, "--source-label", "dec", "--append"]) == 0
    assert out.read_bytes() == appended  # appending the same snapshot again changes nothing

    assert main([*argv, "--source-label", "dec"]) == 0  # without --append: the snapshot alone
    assert read_card(out) == card_rows(dec_data, "2026-12-01", "dec")


def test_cli_runs_as_a_module(tmp_path):
    src = _write_json(tmp_path / "prices.json", SYNTHETIC)
    out = tmp_path / "card.csv"
    cmd = [sys.executable, "-m", "tools.provider_card"]
    cmd += ["--litellm", str(src), "--out", str(out), "--effective-from", "2026-11-01"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    assert "wrote 13 rows" in done.stdout
    assert "gpt-4o" in done.stderr  # warns that the demo's models are not priced
    assert read_card(out)[0]["source"] == SOURCE


def test_cli_rejects_a_bad_date(tmp_path):
    src = _write_json(tmp_path / "prices.json", SYNTHETIC)
    with pytest.raises(SystemExit):
        main(["--litellm", str(src), "--out", str(tmp_path / "c.csv"), "--effective-from", "12/1"])
