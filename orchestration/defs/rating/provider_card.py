"""The provider cost card: what the model providers charge us, list prices per token.

Derived from LiteLLM's price table (``model_prices_and_context_window_backup.json``) and
shipped as ``catalog/provider_costs.csv``, one row per (provider, model, version)::

    python -m orchestration.defs.rating.provider_card \\
        --litellm ../shared/reference/litellm_model_prices_2026-11.json \\
        --out catalog/provider_costs.csv --effective-from 2026-01-01

Selection (chat-mode entries, ``mode == "chat"``, with both an input and an output price):

- LiteLLM ``openai`` -> ``openai``, ``anthropic`` -> ``anthropic`` (model = LiteLLM key);
- LiteLLM ``gemini`` -> ``gcp.gemini``, model = key without its ``gemini/`` prefix. When both
  ``gemini/X`` and a bare ``X`` exist, the prefixed (canonical) entry wins;
- LiteLLM ``bedrock`` / ``bedrock_converse`` entries whose key is an Anthropic Bedrock model id
  (``anthropic.claude-...``) -> ``aws.bedrock``, model = key. Region-prefixed duplicates
  (``us.anthropic...``, ``global.anthropic...``) and path-style keys (containing ``/``) are
  skipped;
- fine-tune keys (``ft:...``) are skipped. LiteLLM's ``deprecation_date`` is ignored on purpose:
  a deprecated model is still billed until it is shut down (``o4-mini``, which the demo uses,
  is marked deprecated 2026-10-23 in the 2026-11 snapshot).

Prices are exact decimal strings in plain notation (``2.5e-06`` -> ``0.0000025``), converted
via ``Decimal(repr(float))`` (equal to the JSON text) and never through float arithmetic;
trailing zeros are stripped. An empty cell means LiteLLM has no such price; the rating
pipeline then falls back as follows:

- ``cache_read_per_token`` (``cache_read_input_token_cost``) empty -> ``input_per_token``;
- ``cache_write_per_token`` (``cache_creation_input_token_cost``) empty -> ``input_per_token``;
- ``reasoning_per_token`` (``output_cost_per_reasoning_token``) empty -> ``output_per_token``;
- ``*_above_200k_per_token`` (``input_cost_per_token_above_200k_tokens``,
  ``output_cost_per_token_above_200k_tokens``, ``cache_read_input_token_cost_above_200k_tokens``,
  ``cache_creation_input_token_cost_above_200k_tokens``) empty -> no long-context rate for that
  token class: the standard column (after its own fallback) applies. When a prompt exceeds
  200k tokens, the above-200k rates apply to all tokens of that request.

Other tiers LiteLLM knows (batch/flex/priority service tiers, 1-hour cache writes, other
context thresholds such as ``above_272k``) are not on the card.

Versions: ``effective_from`` (inclusive) and ``effective_to`` (exclusive, empty = still open)
are ISO dates. LiteLLM's table has no dates, so a snapshot gets the date from which it is known
to hold (``--effective-from``); the shipped card, the 2026-11 snapshot, is dated 2026-01-01,
the first billable date of this deployment, as no earlier price history is known.
``--append`` adds a snapshot to an existing card as a new version
(see :func:`merge_versions`); without it the card is the snapshot alone. Output is sorted by
provider, model, effective_from with ``\\n`` line endings: the same input gives the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

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
PRICE_COLUMNS: tuple[str, ...] = tuple(PRICE_KEYS)

DEFAULT_EFFECTIVE_FROM = "2026-11-01"
DEFAULT_SOURCE_LABEL = "litellm 1.110.2 model_prices_and_context_window_backup.json"

_BEDROCK_PROVIDERS = ("bedrock", "bedrock_converse")
_GEMINI_PREFIX = "gemini/"
_BEDROCK_ANTHROPIC_PREFIX = "anthropic."


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


def _card_key(key: str, entry: Mapping[str, Any]) -> tuple[str, str, int] | None:
    """(provider, model, preference) of a LiteLLM entry, or None when it is not on the card.

    Lower preference wins when two entries map to the same (provider, model).
    """
    provider = entry.get("litellm_provider")
    if entry.get("mode") != "chat" or key.startswith("ft:"):
        return None
    if provider in ("openai", "anthropic"):
        return (provider, key, 0) if "/" not in key else None
    if provider == "gemini":
        if key.startswith(_GEMINI_PREFIX):
            model, preference = key[len(_GEMINI_PREFIX) :], 0
        else:
            model, preference = key, 1
        return ("gcp.gemini", model, preference) if model and "/" not in model else None
    if provider in _BEDROCK_PROVIDERS:
        if key.startswith(_BEDROCK_ANTHROPIC_PREFIX) and "/" not in key:
            return ("aws.bedrock", key, 0)
        return None
    return None


def card_rows(litellm: dict, effective_from: str, source_label: str) -> list[dict[str, str]]:
    """The card rows of one LiteLLM snapshot, sorted by (provider, model), one per pair."""
    chosen: dict[tuple[str, str], tuple[int, str, dict[str, str]]] = {}
    for key, entry in litellm.items():
        if not isinstance(entry, dict):
            continue
        mapped = _card_key(key, entry)
        if mapped is None:
            continue
        provider, model, preference = mapped
        if entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
            continue
        row = {"provider": provider, "model": model}
        row["effective_from"] = effective_from
        row["effective_to"] = ""
        for column, litellm_key in PRICE_KEYS.items():
            try:
                row[column] = price_str(entry.get(litellm_key))
            except ValueError as exc:
                raise ValueError(f"{key}.{litellm_key}: {exc}") from exc
        row["source"] = source_label
        rank = (preference, key)
        previous = chosen.get((provider, model))
        if previous is None or rank < previous[:2]:
            chosen[(provider, model)] = (preference, key, row)
    return [chosen[pair][2] for pair in sorted(chosen)]


def _prices(row: Mapping[str, str]) -> tuple[Decimal | None, ...]:
    return tuple(Decimal(row[c]) if row.get(c, "") != "" else None for c in PRICE_COLUMNS)


def _sort_key(row: Mapping[str, str]) -> tuple[str, str, str]:
    return (row["provider"], row["model"], row["effective_from"])


def merge_versions(existing: list[dict], new: list[dict], effective_from: str) -> list[dict]:
    """Add snapshot ``new`` (rows effective ``effective_from``) to card ``existing``.

    Per (provider, model): prices unchanged -> the open row stays as it is (no new version);
    prices changed -> the open row is closed (``effective_to = effective_from``) and the new row
    added; not on the card yet -> the new row is added; no longer in ``new`` -> existing rows
    are kept untouched (prices do not vanish retroactively). Closed rows are never modified.
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

    changed: set[tuple[str, str]] = set()
    added: list[dict] = []
    for row in new:
        pair = (row["provider"], row["model"])
        current = open_rows.get(pair)
        if current is not None and _prices(current) == _prices(row):
            continue
        if current is not None:
            if current["effective_from"] >= effective_from:
                raise ValueError(
                    f"{pair[0]}/{pair[1]}: open row effective {current['effective_from']} "
                    f"cannot be closed at {effective_from}"
                )
            changed.add(pair)
        added.append(dict(row))
    merged: list[dict] = []
    for row in existing:
        row = dict(row)
        if (row["provider"], row["model"]) in changed and row.get("effective_to", "") == "":
            row["effective_to"] = effective_from
        merged.append(row)
    merged.extend(added)
    merged.sort(key=_sort_key)
    return merged


def read_card(path: str | Path) -> list[dict[str, str]]:
    """The rows of a card CSV (all values strings, ``""`` when empty)."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != CARD_COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames} are not {list(CARD_COLUMNS)}")
        return [{c: row[c] or "" for c in CARD_COLUMNS} for row in reader]


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


def _missing_demo_models(rows: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
    from orchestration.generator.generate import MODELS

    on_card = {(r["provider"], r["model"]) for r in rows if r.get("effective_to", "") == ""}
    return [pair for pair in MODELS if pair not in on_card]


def _iso_date(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD): {text!r}") from exc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m orchestration.defs.rating.provider_card",
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
    write_card(out, rows)
    missing = _missing_demo_models(rows)
    for provider, model in missing:
        print(f"warning: demo model {provider}/{model} has no open price", file=sys.stderr)
    print(f"wrote {len(rows)} rows ({len(snapshot)} in the snapshot) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
