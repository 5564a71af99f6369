"""The provider cost card: what the model providers charge us, list prices per token.

``catalog/provider_costs.csv``, one row per (provider, model, version), is what the pipeline
reads (:func:`read_card`, then ``read_provider_costs`` of the catalog load types and checks
it). It is derived from LiteLLM's price table by the refresh tool ``tools/provider_card.py``
(``python -m tools.provider_card``), which documents how LiteLLM's names become the card's;
this module is the card's format and the rules the pipeline relies on, nothing more.

The card is keyed by ``(provider, model)``, as usage events are: ``provider`` is the event's
``provider`` field, an OpenTelemetry ``gen_ai.provider.name`` value, and ``model`` the model
as requested. A row's ``aliases`` (space-separated) are other names of the same prices: usage
under any of them finds the row's prices. At any moment a name of a provider belongs to one
row (:func:`card_problems` checks it; the catalog load refuses a card that breaks it). The
same model name at two providers is two rows: the usage's provider decides.

Usage without a provider, or under a (provider, model) the card does not name, has no known
provider cost: it is null, never 0, and the dbt test ``provider_cost_is_known`` (a WARN
check) names the models.

Prices are exact decimal strings in plain notation (``0.0000025``), trailing zeros stripped.
An empty cell means the provider has no such price; the rating pipeline then falls back as
follows:

- ``cache_read_per_token`` empty -> ``input_per_token``;
- ``cache_write_per_token`` empty -> ``input_per_token``;
- ``reasoning_per_token`` empty -> ``output_per_token``;
- ``*_above_200k_per_token`` empty -> no long-context rate for that token class: the standard
  column (after its own fallback) applies. When a prompt exceeds 200k tokens, the above-200k
  rates apply to all tokens of that request.

Versions: ``effective_from`` (inclusive) and ``effective_to`` (exclusive, empty = still open)
are ISO dates. A row's aliases are part of its version: changed aliases close the row and open
a new version, so a name moves from one row to another only from the new date on.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from contracts.catalog import CatalogError, Problem

CARD_COLUMNS: tuple[str, ...] = (
    "provider",
    "model",
    "effective_from",
    "effective_to",
    "input_per_token",
    "output_per_token",
    "cache_read_per_token",
    "cache_write_per_token",
    "reasoning_per_token",
    "input_above_200k_per_token",
    "output_above_200k_per_token",
    "cache_read_above_200k_per_token",
    "cache_write_above_200k_per_token",
    "source",
    "aliases",
)
#: Columns a hand-written card may leave out (read as empty).
OPTIONAL_COLUMNS: tuple[str, ...] = ("aliases",)
#: The price columns, per token.
PRICE_COLUMNS: tuple[str, ...] = tuple(c for c in CARD_COLUMNS if c.endswith("_per_token"))


#: LiteLLM provider -> card provider (OpenTelemetry ``gen_ai.provider.name`` where the
#: conventions name one), in order of preference when two entries claim one name (the
#: provider's own API first). LiteLLM providers not listed keep their name; ``vertex_ai-*``
#: (Vertex AI's model gardens) map to ``gcp.vertex_ai``.
PROVIDERS: tuple[tuple[str, str], ...] = (
    ("openai", "openai"),
    ("text-completion-openai", "openai"),
    ("anthropic", "anthropic"),
    ("gemini", "gcp.gemini"),
    ("vertex_ai", "gcp.vertex_ai"),
    ("vertex_ai-language-models", "gcp.vertex_ai"),
    ("bedrock_converse", "aws.bedrock"),
    ("bedrock", "aws.bedrock"),
    ("bedrock_mantle", "aws.bedrock"),
    ("azure", "azure.ai.openai"),
    ("azure_text", "azure.ai.openai"),
    ("azure_ai", "azure.ai.inference"),
    ("cohere_chat", "cohere"),
    ("cohere", "cohere"),
    ("deepseek", "deepseek"),
    ("groq", "groq"),
    ("watsonx", "ibm.watsonx.ai"),
    ("mistral", "mistral_ai"),
    ("codestral", "mistral_ai"),
    ("text-completion-codestral", "mistral_ai"),
    ("perplexity", "perplexity"),
    ("xai", "x_ai"),
    ("moonshot", "moonshot_ai"),
)
_PROVIDER_NAMES = dict(PROVIDERS)


def card_provider(litellm_provider: str) -> str:
    """The card's provider for a LiteLLM provider (see :data:`PROVIDERS`): the card's rows and
    the ``custom_llm_provider`` of LiteLLM's spend logs (ingestion) both go through it."""
    if litellm_provider in _PROVIDER_NAMES:
        return _PROVIDER_NAMES[litellm_provider]
    if litellm_provider.startswith("vertex_ai-"):
        return "gcp.vertex_ai"
    return litellm_provider


def card_provider_sql(column: str) -> str:
    """:func:`card_provider` as a SQL expression of ``column`` (for ingestion's DuckDB)."""
    cases = " ".join(f"when '{litellm}' then '{card}'" for litellm, card in PROVIDERS)
    return (
        f"case {column} {cases} else case when starts_with({column}, 'vertex_ai-') "
        f"then 'gcp.vertex_ai' else {column} end end"
    )


def read_card(path: str | Path) -> list[dict[str, str]]:
    """The rows of a card CSV (all values strings, ``""`` when empty): the one reader of the
    file. The header is :data:`CARD_COLUMNS`, in order; the :data:`OPTIONAL_COLUMNS` may be
    left out. A missing file or another header raises CatalogError naming the file."""
    path = Path(path)
    if not path.exists():
        raise CatalogError([Problem(path.name, "-", "-", "file missing", str(path))])
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not header_is_valid(reader.fieldnames):
            raise CatalogError(
                [
                    Problem(
                        path.name,
                        "line 1",
                        "header",
                        f"{reader.fieldnames}",
                        ",".join(CARD_COLUMNS),
                    )
                ]
            )
        return [{c: row.get(c) or "" for c in CARD_COLUMNS} for row in reader]


def header_is_valid(fieldnames: Sequence[str] | None) -> bool:
    """Whether a card's header is :data:`CARD_COLUMNS`, optional columns possibly left out."""
    given = tuple(fieldnames or ())
    required = tuple(c for c in CARD_COLUMNS if c not in OPTIONAL_COLUMNS)
    return given in (CARD_COLUMNS, required)


def row_names(row: Mapping[str, str]) -> list[str]:
    """Every name a card row answers to: its model, then its aliases."""
    return [row["model"], *(row.get("aliases") or "").split()]


def card_problems(rows: Sequence[Mapping[str, str]]) -> list[tuple[str, str, str]]:
    """(row, column, what) for each name two row versions of one provider claim at once.

    A name is a row's model or one of its aliases; two claims overlap when their
    ``[effective_from, effective_to)`` intersect. Rating joins usage to the card by name,
    so an overlap would cost the usage twice: the catalog load refuses such a card."""
    claims: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for index, row in enumerate(rows):
        for name in row_names(row):
            start, end = row["effective_from"], row.get("effective_to") or "9999-12-31"
            claims.setdefault((row["provider"], name), []).append((start, end, index))
    problems = []
    for (provider, name), spans in sorted(claims.items()):
        spans.sort()
        for (_, end, first), (start, _, second) in zip(spans, spans[1:], strict=False):
            if start < end:
                problems.append(
                    (
                        f"line {second + 2}",
                        "model/aliases",
                        f"{provider}/{name} is also named by line {first + 2} from "
                        f"{rows[first]['effective_from']}: each name of a provider belongs "
                        "to one row at a time",
                    )
                )
    return problems
