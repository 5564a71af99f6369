"""Refreshing the provider cost card from LiteLLM's price table (a repository tool).

The card's format and the rules the pipeline reads it by are
:mod:`orchestration.defs.rating.provider_card`; this tool derives the card from LiteLLM's price
table (``model_prices_and_context_window_backup.json``), shipped as
``catalog/provider_costs.csv``, one row per (provider, model, version)::

    python -m tools.provider_card \\
        --litellm ../shared/reference/litellm_model_prices_2026-11.json \\
        --out catalog/provider_costs.csv --effective-from 2026-01-01

Selection: every entry of ``mode`` ``chat``, ``completion`` or ``responses`` with both an
``input_cost_per_token`` and an ``output_cost_per_token`` (about 3,500 in the 2026-11 snapshot,
from some 100 LiteLLM providers). LiteLLM's ``deprecation_date`` is ignored on purpose: a
deprecated model is still billed until it is shut down (``o4-mini``, which the demo uses, is
marked deprecated 2026-10-23 in the 2026-11 snapshot).

The card is keyed by ``(provider, model)``, as usage events are: ``provider`` is the event's
``provider`` field, an OpenTelemetry ``gen_ai.provider.name`` value, and ``model`` the model
as requested. Names are normalised in four steps, each a pure function below:

1. **Provider** (:func:`card_provider`): LiteLLM's ``litellm_provider`` becomes the
   OpenTelemetry name where one exists (``gemini`` -> ``gcp.gemini``, ``vertex_ai-*`` ->
   ``gcp.vertex_ai``, ``bedrock``/``bedrock_converse``/``bedrock_mantle`` -> ``aws.bedrock``,
   ``azure`` -> ``azure.ai.openai``, ``azure_ai`` -> ``azure.ai.inference``, ``mistral`` ->
   ``mistral_ai``, ``xai`` -> ``x_ai``, ... see :data:`PROVIDERS`); any other provider keeps
   LiteLLM's name (``deepseek``, ``fireworks_ai``, ``openrouter``...).
2. **Route prefix** (:func:`route_stripped`, always): LiteLLM's routing prefix is not part of
   the model's name: ``gemini/gemini-2.5-flash`` -> ``gemini-2.5-flash``,
   ``azure/gpt-4o`` -> ``gpt-4o``, ``bedrock/invoke/anthropic.claude-...`` ->
   ``anthropic.claude-...``, ``openrouter/anthropic/claude-3.5-sonnet`` ->
   ``anthropic/claude-3.5-sonnet`` (what follows the route is the id the provider's own API
   takes, vendor path included). Two entries with the same provider and stripped name: the
   bare key wins over a routed one, then the earlier LiteLLM provider of :data:`PROVIDERS`,
   then the smaller key; a loser with *other* prices keeps its full LiteLLM key as its model
   (``bedrock_mantle/anthropic.claude-opus-5-5``, ``codestral/codestral-latest``), so no
   price is lost; one with the same prices becomes an alias.
3. **Region** (:func:`region_stripped`, only where prices are equal): Bedrock geography
   prefixes and region paths (``us.``, ``eu.``, ``apac.``, ``global.``, ``us-gov.``...,
   ``us-east-1/``) and Azure data zones (``eu/``, ``us/``, ``global/``...).
4. **Dated snapshot** (:func:`date_stripped`, only where prices are equal): a trailing
   ``-YYYY-MM-DD``, ``-YYYYMMDD`` or ``@YYYYMMDD`` (``gpt-4o-2024-08-06`` -> ``gpt-4o``).
   A date inside a Bedrock id (``...-20250929-v1:0``) is part of the id and stays.

Steps 3 and 4 merge a name into a more general one only when a row of that general name
exists for the same provider **with exactly the same prices** (all nine columns); the
general name is tried region-and-date stripped first, then region stripped, then date
stripped. A variant with other prices keeps its own row: ``us.anthropic.claude-sonnet-4-5-
20250929-v1:0`` costs 10% more than ``anthropic.claude-sonnet-4-5-20250929-v1:0`` and keeps
its name; ``gpt-4o-2024-05-13`` ($5/$15 per 1M) is not ``gpt-4o``. Merged names, and every
LiteLLM key that differs from its row's model, are the row's ``aliases`` (space-separated,
sorted): usage under any of them (``gemini/gemini-2.5-flash``, ``global.anthropic...``,
``azure/gpt-4o-2024-08-06``) finds the row's prices. At any moment a name of a provider
belongs to one row (:func:`card_problems` checks it; the catalog load refuses a card that
breaks it). The same model name at two providers is two rows (``anthropic`` and
``gcp.vertex_ai`` both sell ``claude-sonnet-4-5``): the usage's provider decides.

Prices are exact decimal strings in plain notation (``2.5e-06`` -> ``0.0000025``), converted
via ``Decimal(repr(float))`` (equal to the JSON text) and never through float arithmetic;
trailing zeros are stripped. An empty cell means LiteLLM has no such price (the pipeline's
fallbacks are the card module's).

Other tiers LiteLLM knows (batch/flex/priority service tiers, 1-hour cache writes, other
context thresholds such as ``above_272k``) are not on the card.

Versions: ``effective_from`` (inclusive) and ``effective_to`` (exclusive, empty = still open)
are ISO dates. LiteLLM's table has no dates, so a snapshot gets the date from which it is known
to hold (``--effective-from``); the shipped card, the 2026-11 snapshot, is dated 2026-01-01,
the first billable date of this deployment, as no earlier price history is known.
``--append`` adds a snapshot to an existing card as a new version
(see :func:`merge_versions`); without it the card is the snapshot alone. A row's aliases are
part of its version: changed aliases close the row and open a new version, so a name moves
from one row to another only from the new date on. Output is sorted by
provider, model, effective_from with ``\\n`` line endings: the same input gives the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from orchestration.defs.rating.provider_card import (
    CARD_COLUMNS,
    PRICE_COLUMNS,
    PROVIDERS,
    card_problems,
    card_provider,
    read_card,
    row_names,
)

#: Card price column -> LiteLLM key it is read from.
PRICE_KEYS: dict[str, str] = {
    "input_per_token": "input_cost_per_token",
    "output_per_token": "output_cost_per_token",
    "cache_read_per_token": "cache_read_input_token_cost",
    "cache_write_per_token": "cache_creation_input_token_cost",
    "reasoning_per_token": "output_cost_per_reasoning_token",
    "input_above_200k_per_token": "input_cost_per_token_above_200k_tokens",
    "output_above_200k_per_token": "output_cost_per_token_above_200k_tokens",
    "cache_read_above_200k_per_token": "cache_read_input_token_cost_above_200k_tokens",
    "cache_write_above_200k_per_token": "cache_creation_input_token_cost_above_200k_tokens",
}

DEFAULT_EFFECTIVE_FROM = "2026-11-01"
DEFAULT_SOURCE_LABEL = "litellm 1.110.2 model_prices_and_context_window_backup.json"

#: LiteLLM modes of the entries on the card (per-token text generation).
MODES = ("chat", "completion", "responses")

_PROVIDER_RANK = {litellm: rank for rank, (litellm, _) in enumerate(PROVIDERS)}

#: Route segments LiteLLM puts after a Bedrock prefix to pick the API (same model, same price).
_BEDROCK_ROUTES = ("invoke/", "converse/")
_AWS_REGION_PATH = re.compile(r"^[a-z]{2}(?:-gov)?-[a-z]+-\d+/")
_BEDROCK_GEOGRAPHY = re.compile(r"^(?:us|eu|apac|global|us-gov|au|jp|in|ca)\.")
_AZURE_ZONE = re.compile(r"^(?:eu|us|global|global-standard|apac|us-gov)/")
_DATE_SUFFIX = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-20\d{6}|@20\d{6})$")


def load_litellm(path: str | Path) -> dict:
    """LiteLLM's price table as parsed JSON (numbers as Python floats / ints)."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of models, got {type(data).__name__}")
    return data


def price_str(value: Any) -> str:
    """An exact plain-notation decimal string of a JSON price; ``""`` when absent.

    Floats go through ``repr`` (the shortest string that round-trips, i.e. the JSON text), so
    ``2.5e-06`` -> ``"0.0000025"``. Trailing zeros are stripped (``1.0`` -> ``"1"``).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        raise ValueError(f"not a price: {value!r}")
    if isinstance(value, float):
        dec = Decimal(repr(value))
    elif isinstance(value, int | Decimal):
        dec = Decimal(value)
    elif isinstance(value, str):
        try:
            dec = Decimal(value.strip())
        except InvalidOperation as exc:
            raise ValueError(f"not a price: {value!r}") from exc
    else:
        raise ValueError(f"not a price: {value!r}")
    if not dec.is_finite() or dec < 0:
        raise ValueError(f"not a price: {value!r}")
    if dec == 0:
        return "0"
    return format(dec.normalize(), "f")


def _is_route(segment: str, litellm_provider: str) -> bool:
    """Whether ``segment/`` is LiteLLM's routing prefix for ``litellm_provider``: its name
    (``gemini``, ``bedrock_mantle``), the family it belongs to (``vertex_ai`` of
    ``vertex_ai-anthropic_models``, ``bedrock`` of ``bedrock_converse``, ``azure`` of
    ``azure_text``) or its name hyphenated (``amazon-nova`` of ``amazon_nova``)."""
    return (
        litellm_provider == segment
        or litellm_provider.startswith((segment + "_", segment + "-"))
        or litellm_provider == segment.replace("-", "_")
    )


def route_stripped(key: str, litellm_provider: str) -> str:
    """The model name of a LiteLLM key without LiteLLM's routing prefix (step 2)."""
    segment, slash, rest = key.partition("/")
    if not slash or not rest or not _is_route(segment, litellm_provider):
        return key
    if card_provider(litellm_provider) == "aws.bedrock":
        for route in _BEDROCK_ROUTES:
            if rest.startswith(route) and len(rest) > len(route):
                return rest[len(route) :]
    return rest


def region_stripped(provider: str, name: str) -> str:
    """``name`` without its Bedrock region or geography prefix or Azure data zone (step 3)."""
    if provider == "aws.bedrock":
        name = _AWS_REGION_PATH.sub("", name, count=1)
        return _BEDROCK_GEOGRAPHY.sub("", name, count=1)
    if provider == "azure.ai.openai":
        return _AZURE_ZONE.sub("", name, count=1)
    return name


def date_stripped(name: str) -> str:
    """``name`` without a trailing snapshot date (step 4)."""
    return _DATE_SUFFIX.sub("", name)


def _general_names(provider: str, name: str) -> list[str]:
    """The more general names ``name`` may merge into, most general first."""
    region = region_stripped(provider, name)
    candidates = [date_stripped(region), region, date_stripped(name)]
    return list(dict.fromkeys(c for c in candidates if c and c != name))


def _entry_row(key: str, entry: Mapping[str, Any]) -> dict[str, str]:
    row: dict[str, str] = {}
    for column, litellm_key in PRICE_KEYS.items():
        try:
            row[column] = price_str(entry.get(litellm_key))
        except ValueError as exc:
            raise ValueError(f"{key}.{litellm_key}: {exc}") from exc
    return row


def _selected(litellm: Mapping[str, Any]) -> list[tuple[str, str, dict]]:
    """(key, LiteLLM provider, entry) of every entry the card covers, in key order."""
    chosen = []
    for key in sorted(litellm):
        entry = litellm[key]
        if not isinstance(entry, dict) or entry.get("mode") not in MODES:
            continue
        provider = entry.get("litellm_provider")
        if not isinstance(provider, str) or not provider:
            continue
        if entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
            continue
        chosen.append((key, provider, entry))
    return chosen


def card_rows(litellm: dict, effective_from: str, source_label: str) -> list[dict[str, str]]:
    """The card rows of one LiteLLM snapshot, sorted by (provider, model), one per pair.

    Applies the four normalisation steps of the module docstring; every covered LiteLLM key
    ends up as a row's model or one of its aliases, with exactly its own prices."""
    # Step 2: one row per (provider, route-stripped name); losers with other prices keep
    # their full key.
    claims: dict[tuple[str, str], list[tuple[tuple, str, dict[str, str]]]] = {}
    for key, litellm_provider, entry in _selected(litellm):
        provider = card_provider(litellm_provider)
        name = route_stripped(key, litellm_provider)
        rank = (name != key, _PROVIDER_RANK.get(litellm_provider, len(PROVIDERS)), key)
        claims.setdefault((provider, name), []).append((rank, key, _entry_row(key, entry)))
    rows: dict[tuple[str, str], dict[str, str]] = {}
    aliases: dict[tuple[str, str], set[str]] = {}
    # A full key that is also another entry's stripped name is left to that entry (the
    # Agent API's perplexity/perplexity/sonar is model perplexity/sonar, not chat's sonar).
    for (provider, name), entries in sorted(claims.items()):
        entries.sort(key=lambda claim: claim[0])
        _, first_key, prices = entries[0]
        rows[(provider, name)] = prices
        aliases[(provider, name)] = set()
        for _, key, other in entries:
            if key == name or (provider, key) in claims:
                continue
            if other == prices:
                aliases[(provider, name)].add(key)
            else:
                rows[(provider, key)] = other
                aliases[(provider, key)] = set()

    # Steps 3 and 4: a name merges into a more general name with the same prices.
    target: dict[tuple[str, str], tuple[str, str]] = {}

    def resolve(pair: tuple[str, str]) -> tuple[str, str]:
        if pair not in target:
            target[pair] = pair
            for general in _general_names(*pair):
                other = (pair[0], general)
                if other in rows and rows[other] == rows[pair]:
                    target[pair] = resolve(other)
                    break
        return target[pair]

    merged: dict[tuple[str, str], set[str]] = {}
    for pair in sorted(rows):
        canonical = resolve(pair)
        names = merged.setdefault(canonical, set())
        names |= aliases[pair]
        if canonical != pair:
            names.add(pair[1])
    out = []
    for provider, model in sorted(merged):
        row = {"provider": provider, "model": model}
        row["effective_from"] = effective_from
        row["effective_to"] = ""
        row.update(rows[(provider, model)])
        row["source"] = source_label
        row["aliases"] = " ".join(sorted(merged[(provider, model)] - {model}))
        out.append(row)
    problems = card_problems(out)
    if problems:
        raise ValueError("; ".join(f"{where}: {what}" for where, _, what in problems))
    return out


def lookup(
    rows: Sequence[Mapping[str, str]], provider: str, model: str, on: str
) -> Mapping[str, str] | None:
    """The row that prices usage of ``(provider, model)`` on ISO date ``on``, as rating does
    (by model or alias, effective_from <= on < effective_to); None when the card has none."""
    for row in rows:
        if row["provider"] != provider or model not in row_names(row):
            continue
        if row["effective_from"] <= on < (row.get("effective_to") or "9999-12-31"):
            return row
    return None


def _version(row: Mapping[str, str]) -> tuple:
    """What makes a row version: its prices (as numbers) and the names it answers to."""
    prices = tuple(Decimal(row[c]) if row.get(c, "") != "" else None for c in PRICE_COLUMNS)
    return prices, frozenset(row_names(row))


def _sort_key(row: Mapping[str, str]) -> tuple[str, str, str]:
    return (row["provider"], row["model"], row["effective_from"])


def merge_versions(existing: list[dict], new: list[dict], effective_from: str) -> list[dict]:
    """Add snapshot ``new`` (rows effective ``effective_from``) to card ``existing``.

    Per (provider, model): prices and aliases unchanged -> the open row stays as it is (no new
    version); either changed -> the open row is closed (``effective_to = effective_from``) and
    the new row added; not on the card yet -> the new row is added; no longer in ``new`` ->
    existing rows are kept untouched (prices do not vanish retroactively), unless one of the
    row's names now belongs to a row of ``new`` (it became an alias, or an alias of it became
    a model): then it is closed at ``effective_from``. Closed rows are never modified.
    """
    for row in new:
        if row["effective_from"] != effective_from:
            raise ValueError(
                f"new row {row['provider']}/{row['model']} is effective "
                f"{row['effective_from']}, expected {effective_from}"
            )
    open_rows: dict[tuple[str, str], dict] = {}
    for row in existing:
        if row.get("effective_to", "") == "":
            pair = (row["provider"], row["model"])
            if pair in open_rows:
                raise ValueError(f"card has two open rows for {pair[0]}/{pair[1]}")
            open_rows[pair] = row

    new_pairs = {(row["provider"], row["model"]) for row in new}
    new_names = {(row["provider"], name) for row in new for name in row_names(row)}
    closed: set[tuple[str, str]] = set()
    added: list[dict] = []
    for row in new:
        pair = (row["provider"], row["model"])
        current = open_rows.get(pair)
        if current is not None and _version(current) == _version(row):
            continue
        if current is not None:
            closed.add(pair)
        added.append(dict(row))
    for pair, row in open_rows.items():
        if pair not in new_pairs and any((pair[0], n) in new_names for n in row_names(row)):
            closed.add(pair)
    for pair in sorted(closed):
        if open_rows[pair]["effective_from"] >= effective_from:
            raise ValueError(
                f"{pair[0]}/{pair[1]}: open row effective {open_rows[pair]['effective_from']} "
                f"cannot be closed at {effective_from}"
            )
    merged: list[dict] = []
    for row in existing:
        row = dict(row)
        if (row["provider"], row["model"]) in closed and row.get("effective_to", "") == "":
            row["effective_to"] = effective_from
        merged.append(row)
    merged.extend(added)
    merged.sort(key=_sort_key)
    return merged


def write_card(path: str | Path, rows: Iterable[Mapping[str, str]]) -> None:
    """Write ``rows`` as a card CSV, sorted by provider, model, effective_from, ``\\n`` endings."""
    ordered = sorted(rows, key=_sort_key)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CARD_COLUMNS)
        for row in ordered:
            writer.writerow([row.get(c, "") or "" for c in CARD_COLUMNS])


def missing_demo_models(rows: Sequence[Mapping[str, str]]) -> list[tuple[str, str]] | None:
    """The demo generator's (provider, model) pairs no open row of ``rows`` names (the refresh
    warns about them: the demo's usage would have no provider cost); None without the demo
    generator (an install without the demo extra has no numpy): nothing to check against."""
    try:
        from tools.generator.generate import MODELS
    except ImportError:
        return None
    on_card = {
        (r["provider"], name)
        for r in rows
        if r.get("effective_to", "") == ""
        for name in row_names(r)
    }
    return [pair for pair in MODELS if pair not in on_card]


def _iso_date(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD): {text!r}") from exc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.provider_card",
        description="Refresh the provider cost card from LiteLLM's price table.",
    )
    p.add_argument("--litellm", required=True, help="LiteLLM model_prices JSON file")
    p.add_argument(
        "--out", required=True, help="card CSV to write, e.g. catalog/provider_costs.csv"
    )
    p.add_argument(
        "--effective-from",
        type=_iso_date,
        default=DEFAULT_EFFECTIVE_FROM,
        help=f"date the snapshot's prices apply from (default: {DEFAULT_EFFECTIVE_FROM})",
    )
    p.add_argument(
        "--source-label",
        default=DEFAULT_SOURCE_LABEL,
        help=f"text for the source column (default: {DEFAULT_SOURCE_LABEL!r})",
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="add the snapshot as a new version of the existing --out card",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    snapshot = card_rows(load_litellm(args.litellm), args.effective_from, args.source_label)
    out = Path(args.out)
    if args.append and out.exists():
        rows = merge_versions(read_card(out), snapshot, args.effective_from)
    else:
        rows = snapshot
    problems = card_problems(rows)
    if problems:
        for where, _, what in problems:
            print(f"error: {out}: {where}: {what}", file=sys.stderr)
        return 1
    write_card(out, rows)
    missing = missing_demo_models(rows)
    if missing is None:
        print(
            "note: demo models not checked (the demo generator needs the demo extra)",
            file=sys.stderr,
        )
    for provider, model in missing or []:
        print(f"warning: demo model {provider}/{model} has no open price", file=sys.stderr)
    print(f"wrote {len(rows)} rows ({len(snapshot)} in the snapshot) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
