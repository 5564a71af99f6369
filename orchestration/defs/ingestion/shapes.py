"""Producer shapes: what a line of an object may look like, and how it becomes canonical.

tokenbill reads usage as producers already write it. Each JSON line (or Parquet row, encoded
as a JSON object) is recognised from its *keys* and mapped to the canonical usage event
(``contracts/usage_event.py``), which then passes the same contract as a canonical line. The
mapping is two DuckDB statements over all the lines of a batch (shape detection into a
table, then the mapping of every shape; no Python per event); lines that can only be
canonical skip it.

Detection (deterministic; the first matching rule decides; ``record`` = what one line yields)
-----------------------------------------------------------------------------------------------
1. ``specversion`` at top level: a **CloudEvents 1.0** envelope. Its ``data`` (an object) is
   detected again with rules 3-7 (OTLP inside CloudEvents is not accepted), after
   ``event_id = <source>/<id>`` (the idempotency key), ``timestamp = data.timestamp`` else
   ``time``, ``customer_id = data.customer_id`` else ``subject`` are filled in. The shape is
   then reported as ``cloudevents:<inner shape>``. ``data`` absent or not an object
   (``data_base64``): ``unrecognized_format``. LiteLLM data keeps ``<source>/<id>`` as its
   event id too; its own customer fields come first, then ``subject``.
2. Otherwise the *shape markers* of the line are counted:

   =================  =========================================================
   shape              marker (top-level keys)
   =================  =========================================================
   ``canonical``      any of input_tokens, output_tokens, cached_input_tokens,
                      cache_write_tokens, reasoning_tokens
   envelope + native  ``response`` (and no ``custom_llm_provider``)
   ``otlp``           ``resourceSpans``
   ``litellm``        ``custom_llm_provider``
   ``token_type``     ``tokens`` and ``type``
   =================  =========================================================

   Two or more markers: ``ambiguous_format`` (the detail names the shapes and their keys).
   None: ``canonical`` when the line has any canonical identifying field (event_id,
   timestamp, customer_id, model: it is a canonical event missing its counts, and the
   contract says which), else ``unrecognized_format`` (the detail lists the line's keys).
3. **Envelope + native**: the canonical identifying fields at top level (``event_id``,
   ``timestamp``, ``customer_id``, optional dimensions, ``metadata``), ``provider``, and
   ``response``: the provider's response object as its SDK returns it. The sub-shape comes
   from the keys of the usage object; ``provider`` only breaks the one tie below:

   - ``response.usageMetadata`` -> ``gemini`` (generateContent, and Live's
     ``responseTokenCount``)
   - ``response.usage`` with ``inputTokens``/``outputTokens`` -> ``bedrock_converse``
   - ``response.usage`` with ``prompt_tokens``/``completion_tokens`` -> ``openai_chat``
   - ``response.usage`` with ``input_tokens``/``output_tokens``, then by detail keys:
     ``input_token_details``/``output_token_details`` -> ``openai_realtime``;
     ``input_tokens_details``/``output_tokens_details.reasoning_tokens``/``total_tokens`` ->
     ``openai_responses``; ``cache_read_input_tokens``/``cache_creation_input_tokens``/
     ``cache_creation``/``server_tool_use``/``output_tokens_details.thinking_tokens`` ->
     ``anthropic_messages``. Markers of two of these: ``ambiguous_format``. None: by
     ``provider`` (``anthropic`` -> Anthropic; ``openai``/``azure.ai.openai`` -> Responses),
     else ``ambiguous_format``.
   - two usage families at once (e.g. ``usage`` and ``usageMetadata``): ``ambiguous_format``.
   - no usage at all (``response`` without ``usage``/``usageMetadata``, or null): the
     provider reported none (a cancelled stream without its final usage chunk):
     ``usage_not_reported`` (quarantined, counted in the audit's ``unreported_usage_count``
     and checked by the ``unreported_usage`` WARN check; never billed as zero).
   - a usage object in none of the families: ``unrecognized_format`` (its keys listed).

   ``model`` = the envelope's, else ``response.model`` / ``response.modelVersion``.
   ``provider`` = the envelope's, else the shape's (openai, anthropic, gcp.gemini,
   aws.bedrock).
4. **OTLP JSON** (``resourceSpans`` -> ``scopeSpans`` -> ``spans``): one record per GenAI
   inference span: a span with a ``gen_ai.usage.input_tokens``/``output_tokens`` attribute
   (or the deprecated ``prompt_tokens``/``completion_tokens``) whose
   ``gen_ai.operation.name`` is absent or one of chat, generate_content, text_completion,
   embeddings. Every other span (HTTP, database, and agent/tool/workflow spans, whose usage
   aggregates their children's) is skipped and counted (``otlp_spans_skipped``), never
   quarantined. ``event_id = <traceId>/<spanId>``, ``trace_id = traceId``, ``timestamp`` =
   ``endTimeUnixNano`` (microseconds kept), ``status`` = ``failed`` when the span status code
   is ERROR (2), else ``success``. Customer and feature: the first of the configured
   attribute keys found on the span, then on its resource (``TOKENBILL_OTLP_CUSTOMER_KEYS``,
   default ``tokenbill.customer_id,user.id,enduser.id``; ``TOKENBILL_OTLP_FEATURE_KEYS``,
   default ``tokenbill.feature``). Attribute values may be string, int (OTLP JSON writes
   int64 as a string) or double.
5. **LiteLLM** ``StandardLoggingPayload``: ``event_id = id``, ``timestamp = endTime`` (epoch
   seconds as LiteLLM's loggers write it, or RFC 3339), customer = the first non-blank of
   ``TOKENBILL_LITELLM_CUSTOMER_FIELDS`` (default ``end_user,metadata.user_api_key_team_id``),
   ``provider = custom_llm_provider`` as the cost card names providers (``bedrock`` ->
   ``aws.bedrock``, ``gemini`` -> ``gcp.gemini``: ``card_provider``), ``model``, ``status``
   success -> success, failure -> failed, ``trace_id = trace_id``,
   ``request_group_id = session_id`` (else ``metadata.session_id``). Tokens:
   ``prompt_tokens`` / ``completion_tokens`` (LiteLLM's are inclusive: it adds Anthropic's
   cache reads and writes to the prompt), cached =
   ``metadata.usage_object.prompt_tokens_details.cached_tokens`` else
   ``...cache_read_input_tokens``, cache writes = ``...cache_creation_input_tokens`` else
   ``...prompt_tokens_details.cache_write_tokens``, reasoning =
   ``...completion_tokens_details.reasoning_tokens``.
6. **Per-token-type events** (Kong/OpenMeter, Vercel: one event per request and token
   type; ``data`` of a CloudEvent ``{tokens, type, model, provider?, request_id?}``): rated
   **row by row**. Each row is one event with its tokens as input (``type`` input, prompt,
   request) or output (output, completion, response) and 0 for the other;
   ``request_group_id = request_id`` ties a request's rows together (reconcile per request
   with it). Any other ``type`` (e.g. total, which would double count) is quarantined as
   ``unknown_token_type``. Row by row keeps one line = one event (nothing to hold across
   objects or hours); the price of a token is the same either way, except that a long-context
   price switch (on the prompt size of a call) sees only the input row's tokens.
7. **Canonical**: unchanged.

Mappings (native -> canonical inclusive totals and subsets)
-----------------------------------------------------------
See ``MAPPINGS``: per shape, each canonical field and the native expression it comes from.
A native count that is not an integer, is negative, or breaks an invariant is quarantined by
the contract; the detail then also names the native fields it was mapped from.

Records and accounting
----------------------
A *record* is one line, except an OTLP line: one record per GenAI span it holds (0 when it
has none; its skipped spans are counted). ``lines_read`` in the audit counts records, so
``lines_read = valid + duplicates + quarantined`` holds per hour whatever the shapes. The
line number of every record of an OTLP line is that line's. ``raw.ingestion_format_audit``
counts records per hour and shape, and where they went.

Parquet rows are re-encoded as JSON objects (nested columns become nested objects), so every
shape above may also arrive as Parquet rows with the same column names.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from contracts.usage_event import MODALITY_COUNTS, TOKEN_FIELDS, WIRE_FIELDS
from orchestration.defs.rating.provider_card import card_provider_sql
from orchestration.settings import setting

#: Shapes a record is reported under (CloudEvents wrap one of the others: ``cloudevents:<shape>``).
SHAPES = (
    "canonical",
    "openai_chat",
    "openai_responses",
    "openai_realtime",
    "anthropic_messages",
    "gemini",
    "bedrock_converse",
    "otlp",
    "litellm",
    "token_type",
)

#: shape -> canonical field -> where it comes from (documentation, and the native names a
#: quarantine detail quotes).
MAPPINGS: dict[str, dict[str, str]] = {
    "openai_chat": {
        "input_tokens": "response.usage.prompt_tokens",
        "cached_input_tokens": "response.usage.prompt_tokens_details.cached_tokens",
        "cache_write_tokens": "response.usage.prompt_tokens_details.cache_write_tokens",
        "audio_input_tokens": "response.usage.prompt_tokens_details.audio_tokens",
        "image_input_tokens": "response.usage.prompt_tokens_details.image_tokens",
        "output_tokens": "response.usage.completion_tokens",
        "reasoning_tokens": "response.usage.completion_tokens_details.reasoning_tokens",
        "audio_output_tokens": "response.usage.completion_tokens_details.audio_tokens",
    },
    "openai_responses": {
        "input_tokens": "response.usage.input_tokens",
        "cached_input_tokens": "response.usage.input_tokens_details.cached_tokens",
        "cache_write_tokens": "response.usage.input_tokens_details.cache_write_tokens",
        "output_tokens": "response.usage.output_tokens",
        "reasoning_tokens": "response.usage.output_tokens_details.reasoning_tokens",
    },
    "openai_realtime": {
        "input_tokens": "response.usage.input_tokens",
        "cached_input_tokens": "response.usage.input_token_details.cached_tokens",
        "audio_input_tokens": "response.usage.input_token_details.audio_tokens",
        "image_input_tokens": "response.usage.input_token_details.image_tokens",
        "output_tokens": "response.usage.output_tokens",
        "audio_output_tokens": "response.usage.output_token_details.audio_tokens",
        "image_output_tokens": "response.usage.output_token_details.image_tokens",
    },
    "anthropic_messages": {
        "input_tokens": "response.usage.input_tokens + cache_read_input_tokens "
        "+ cache_creation_input_tokens",
        "cached_input_tokens": "response.usage.cache_read_input_tokens",
        "cache_write_tokens": "response.usage.cache_creation_input_tokens",
        "cache_write_5m_tokens": "response.usage.cache_creation.ephemeral_5m_input_tokens",
        "cache_write_1h_tokens": "response.usage.cache_creation.ephemeral_1h_input_tokens",
        "output_tokens": "response.usage.output_tokens",
        "reasoning_tokens": "response.usage.output_tokens_details.thinking_tokens",
    },
    "gemini": {
        "input_tokens": "response.usageMetadata.promptTokenCount + toolUsePromptTokenCount",
        "cached_input_tokens": "response.usageMetadata.cachedContentTokenCount",
        "output_tokens": "response.usageMetadata.candidatesTokenCount (or Live's "
        "responseTokenCount) + thoughtsTokenCount, unless promptTokenCount + candidates + "
        "toolUsePromptTokenCount = totalTokenCount (candidates then include the thoughts)",
        "reasoning_tokens": "response.usageMetadata.thoughtsTokenCount",
        "audio_input_tokens": "response.usageMetadata.promptTokensDetails[modality=AUDIO]",
        "image_input_tokens": "response.usageMetadata.promptTokensDetails[modality=IMAGE]",
        "audio_output_tokens": "response.usageMetadata.candidatesTokensDetails (or "
        "responseTokensDetails)[modality=AUDIO]",
        "image_output_tokens": "response.usageMetadata.candidatesTokensDetails (or "
        "responseTokensDetails)[modality=IMAGE]",
    },
    "bedrock_converse": {
        "input_tokens": "response.usage.inputTokens + cacheReadInputTokens + cacheWriteInputTokens",
        "cached_input_tokens": "response.usage.cacheReadInputTokens",
        "cache_write_tokens": "response.usage.cacheWriteInputTokens",
        "cache_write_5m_tokens": "response.usage.cacheDetails[ttl=5m].inputTokens",
        "cache_write_1h_tokens": "response.usage.cacheDetails[ttl=1h].inputTokens",
        "output_tokens": "response.usage.outputTokens",
    },
    "otlp": {
        "input_tokens": "gen_ai.usage.input_tokens",
        "cached_input_tokens": "gen_ai.usage.cache_read.input_tokens",
        "cache_write_tokens": "gen_ai.usage.cache_creation.input_tokens",
        "audio_input_tokens": "gen_ai.usage.audio.input_tokens",
        "image_input_tokens": "gen_ai.usage.image.input_tokens",
        "output_tokens": "gen_ai.usage.output_tokens",
        "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
        "audio_output_tokens": "gen_ai.usage.audio.output_tokens",
        "image_output_tokens": "gen_ai.usage.image.output_tokens",
    },
    "litellm": {
        "input_tokens": "prompt_tokens",
        "cached_input_tokens": "metadata.usage_object.prompt_tokens_details.cached_tokens "
        "(else cache_read_input_tokens)",
        "cache_write_tokens": "metadata.usage_object.cache_creation_input_tokens (else "
        "prompt_tokens_details.cache_write_tokens)",
        "output_tokens": "completion_tokens",
        "reasoning_tokens": "metadata.usage_object.completion_tokens_details.reasoning_tokens",
    },
    "token_type": {
        "input_tokens": "data.tokens where data.type is input/prompt/request, else 0",
        "output_tokens": "data.tokens where data.type is output/completion/response, else 0",
    },
}

# ---------------------------------------------------------------------------------------------
# The mapping query. Every value stays text (as the contract validates it): a native count that
# is not a non-negative integer is passed on as sent, for the contract to quarantine.

#: Substrings of a line that can only be canonical do not include any of these (quoted keys of
#: the other shapes): lines without them skip the mapping query.
MARKER_TEXTS = (
    '"response"',
    '"resourceSpans"',
    '"specversion"',
    '"custom_llm_provider"',
    '"tokens"',
)
#: ... and include one of these (a line with none may be in no shape at all).
CANONICAL_TEXTS = ('"event_id"', '"customer_id"', '"input_tokens"', '"output_tokens"')

_CANONICAL_KEYS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
_GENAI_OPERATIONS = ("chat", "generate_content", "text_completion", "embeddings")
_INPUT_TYPES = ("input", "prompt", "request")
_OUTPUT_TYPES = ("output", "completion", "response")
_TS = "'%Y-%m-%dT%H:%M:%S.%fZ'"
DEFAULT_PROVIDERS = {
    "openai_chat": "openai",
    "openai_responses": "openai",
    "openai_realtime": "openai",
    "anthropic_messages": "anthropic",
    "gemini": "gcp.gemini",
    "bedrock_converse": "aws.bedrock",
}

MACROS = r"""
create or replace macro tb_bad(xs) as
    list_filter(xs, lambda x: x is not null and not regexp_full_match(x, '\d{1,18}'))[1];
create or replace macro tb_sum(xs) as
    case
        when tb_bad(xs) is not null then tb_bad(xs)
        else coalesce(list_sum(list_transform(
            xs, lambda x: try_cast(coalesce(x, '0') as hugeint))), 0)::varchar
    end;
create or replace macro tb_add(xs) as case when xs[1] is not null then tb_sum(xs) end;
create or replace macro tb_attr(attrs, name) as list_filter(attrs, lambda a: a.k = name)[1].v;
create or replace macro tb_attrs(attrs) as list_transform(
    coalesce(attrs, []),
    lambda a: {'k': a.key, 'v': coalesce(a.value.stringValue, a.value.intValue,
        a.value.doubleValue, a.value.boolValue)});
"""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _keys_list(keys: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_quote(k) for k in keys) + "]"


def _patch(base: str, fields: dict[str, str]) -> str:
    """``base`` (JSON) with ``fields`` set; a null value removes the key (JSON merge patch)."""
    pairs = ", ".join(f"{_quote(k)}, {v}" for k, v in fields.items())
    return f"json_merge_patch({base}, json_object({pairs}))"


def _schema(node) -> str:
    """A ``from_json`` structure: dicts are objects, one-item lists arrays, strings types."""
    if isinstance(node, dict):
        return "{" + ", ".join(f'"{k}": {_schema(v)}' for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + _schema(node[0]) + "]"
    return f'"{node}"'


V = "VARCHAR"
_MODALITIES = [{"modality": V, "tokenCount": V}]
_ATTRIBUTES = [
    {
        "key": V,
        "value": {"stringValue": V, "intValue": V, "doubleValue": V, "boolValue": V},
    }
]
#: The canonical identifying fields, as an envelope or a per-token-type event sends them.
_IDENTIFIERS = {f: V for f in WIRE_FIELDS if f not in TOKEN_FIELDS and f != "metadata"}
_USAGE = {
    **{
        k: V
        for k in (
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "inputTokens",
            "outputTokens",
            "totalTokens",
            "cacheReadInputTokens",
            "cacheWriteInputTokens",
        )
    },
    "prompt_tokens_details": {
        k: V for k in ("cached_tokens", "cache_write_tokens", "audio_tokens", "image_tokens")
    },
    "completion_tokens_details": {k: V for k in ("reasoning_tokens", "audio_tokens")},
    "input_tokens_details": {k: V for k in ("cached_tokens", "cache_write_tokens")},
    "output_tokens_details": {k: V for k in ("reasoning_tokens", "thinking_tokens")},
    "input_token_details": {
        k: V for k in ("cached_tokens", "audio_tokens", "image_tokens", "text_tokens")
    },
    "output_token_details": {k: V for k in ("audio_tokens", "image_tokens", "text_tokens")},
    "cache_creation": {k: V for k in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")},
    "server_tool_use": {k: V for k in ("web_search_requests", "web_fetch_requests")},
    "cacheDetails": [{"ttl": V, "inputTokens": V}],
}
_USAGE_METADATA = {
    **{
        k: V
        for k in (
            "promptTokenCount",
            "cachedContentTokenCount",
            "candidatesTokenCount",
            "responseTokenCount",
            "thoughtsTokenCount",
            "toolUsePromptTokenCount",
            "totalTokenCount",
        )
    },
    "promptTokensDetails": _MODALITIES,
    "candidatesTokensDetails": _MODALITIES,
    "responseTokensDetails": _MODALITIES,
}
#: Per shape, the fields its mapping reads, parsed once per line (``from_json``: leaves as
#: the text they were sent as; an absent key, a null and a value of another kind read as null).
SCHEMAS = {
    "cloudevents": _schema(
        {**{k: V for k in ("specversion", "id", "source", "subject", "time")}, "data": "JSON"}
    ),
    "envelope": _schema(
        {
            **_IDENTIFIERS,
            "metadata": "JSON",
            "response": {
                "model": V,
                "modelVersion": V,
                "status": V,
                "usage": _USAGE,
                "usageMetadata": _USAGE_METADATA,
            },
        }
    ),
    "token_type": _schema(
        {
            **_IDENTIFIERS,
            "metadata": "JSON",
            **{k: V for k in ("tokens", "type", "request_id", "requestId")},
        }
    ),
    "otlp": _schema(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": _ATTRIBUTES},
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": V,
                                    "spanId": V,
                                    "endTimeUnixNano": V,
                                    "status": {"code": V},
                                    "attributes": _ATTRIBUTES,
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    ),
    "litellm": _schema(
        {
            k: V
            for k in (
                "event_id",
                "customer_id",
                "id",
                "custom_llm_provider",
                "model",
                "status",
                "prompt_tokens",
                "completion_tokens",
                "endTime",
                "trace_id",
                "session_id",
            )
        }
    ),
}


def _details_sum(items: str, key: str, value: str, amount: str) -> str:
    """Sum of ``amount`` over the entries of the list ``items`` whose ``key`` is ``value``
    (case-insensitive); null when the list is absent; a non-integer entry as sent."""
    return (
        f"case when {items} is not null then tb_sum(list_transform(list_filter({items}, "
        f"lambda e: upper(e.{key}) = '{value}'), lambda e: e.{amount})) end"
    )


def _envelope_fields(shape: str) -> dict[str, str]:
    """Canonical field -> SQL (text) for one envelope sub-shape; ``u`` is the usage struct,
    ``um`` Gemini's usageMetadata."""
    if shape == "openai_chat":
        return {
            "input_tokens": "u.prompt_tokens",
            "cached_input_tokens": "u.prompt_tokens_details.cached_tokens",
            "cache_write_tokens": "u.prompt_tokens_details.cache_write_tokens",
            "audio_input_tokens": "u.prompt_tokens_details.audio_tokens",
            "image_input_tokens": "u.prompt_tokens_details.image_tokens",
            "output_tokens": "u.completion_tokens",
            "reasoning_tokens": "u.completion_tokens_details.reasoning_tokens",
            "audio_output_tokens": "u.completion_tokens_details.audio_tokens",
        }
    if shape == "openai_responses":
        return {
            "input_tokens": "u.input_tokens",
            "cached_input_tokens": "u.input_tokens_details.cached_tokens",
            "cache_write_tokens": "u.input_tokens_details.cache_write_tokens",
            "output_tokens": "u.output_tokens",
            "reasoning_tokens": "u.output_tokens_details.reasoning_tokens",
        }
    if shape == "openai_realtime":
        return {
            "input_tokens": "u.input_tokens",
            "cached_input_tokens": "u.input_token_details.cached_tokens",
            "audio_input_tokens": "u.input_token_details.audio_tokens",
            "image_input_tokens": "u.input_token_details.image_tokens",
            "output_tokens": "u.output_tokens",
            "audio_output_tokens": "u.output_token_details.audio_tokens",
            "image_output_tokens": "u.output_token_details.image_tokens",
        }
    if shape == "anthropic_messages":
        return {
            "input_tokens": "tb_add([u.input_tokens, u.cache_read_input_tokens, "
            "u.cache_creation_input_tokens])",
            "cached_input_tokens": "u.cache_read_input_tokens",
            "cache_write_tokens": "u.cache_creation_input_tokens",
            "cache_write_5m_tokens": "u.cache_creation.ephemeral_5m_input_tokens",
            "cache_write_1h_tokens": "u.cache_creation.ephemeral_1h_input_tokens",
            "output_tokens": "u.output_tokens",
            "reasoning_tokens": "u.output_tokens_details.thinking_tokens",
        }
    if shape == "bedrock_converse":
        return {
            "input_tokens": "tb_add([u.inputTokens, u.cacheReadInputTokens, "
            "u.cacheWriteInputTokens])",
            "cached_input_tokens": "u.cacheReadInputTokens",
            "cache_write_tokens": "u.cacheWriteInputTokens",
            "cache_write_5m_tokens": _details_sum("u.cacheDetails", "ttl", "5M", "inputTokens"),
            "cache_write_1h_tokens": _details_sum("u.cacheDetails", "ttl", "1H", "inputTokens"),
            "output_tokens": "u.outputTokens",
        }
    if shape == "gemini":
        prompt = "coalesce(um.promptTokenCount, '0')"
        cand = "coalesce(um.candidatesTokenCount, um.responseTokenCount, '0')"
        tool, thoughts, total = (
            "um.toolUsePromptTokenCount",
            "um.thoughtsTokenCount",
            "um.totalTokenCount",
        )
        parts = f"[{prompt}, {cand}, {tool}, {thoughts}, {total}]"
        details = {
            "input": "um.promptTokensDetails",
            "output": "coalesce(um.candidatesTokensDetails, um.responseTokensDetails)",
        }
        return {
            "input_tokens": f"tb_add([{prompt}, {tool}])",
            "cached_input_tokens": "um.cachedContentTokenCount",
            # Candidates exclude thoughts unless prompt + candidates + tool use = total.
            "output_tokens": f"""case
                when tb_bad({parts}) is not null then tb_bad({parts})
                when {total} is not null and try_cast({prompt} as hugeint)
                    + try_cast({cand} as hugeint) + try_cast(coalesce({tool}, '0') as hugeint)
                    = try_cast({total} as hugeint) then {cand}
                else tb_add([{cand}, {thoughts}])
            end""",
            "reasoning_tokens": thoughts,
            **{
                f"{kind.lower()}_{side}_tokens": _details_sum(items, "modality", kind, "tokenCount")
                for side, items in details.items()
                for kind in ("AUDIO", "IMAGE")
            },
        }
    raise AssertionError(shape)


#: Columns of the mapping query, in order (the wire fields of a record mapped here; a record
#: passed on as canonical JSON text has ``raw_line`` instead).
RESULT_COLUMNS = (
    "line_idx",
    "sub",
    "raw_line",
    "source_format",
    "reason_code",
    "reason_detail",
    "skipped",
    *WIRE_FIELDS,
)


def _select(values: dict[str, str]) -> str:
    """A select list of every result column, null where ``values`` has none."""
    unknown = set(values) - set(RESULT_COLUMNS)
    assert not unknown, unknown
    return ",\n        ".join(f"{values.get(c, 'null')} as {c}" for c in RESULT_COLUMNS)


def _metadata(known: tuple[str, ...]) -> str:
    """The contract's metadata rule, for a line parsed as ``t`` with keys ``k``: the metadata
    object sent with the line's unknown top-level fields merged in (``known`` are not)."""
    nulls = "{" + ",".join(f'"{f}":null' for f in known) + "}"
    return f"""case
            when len(list_filter(k, lambda x: not list_contains({_keys_list(known)}, x))) = 0
                then t.metadata
            when t.metadata is null then json_merge_patch(j, '{nulls}')
            when json_type(t.metadata) = 'OBJECT'
                then json_merge_patch(t.metadata, json_merge_patch(j, '{nulls}'))
            else t.metadata
        end"""


def detection_sql() -> str:
    """The query giving each line of table ``candidates`` (``line_idx``, ``raw_line``) that is
    a JSON object its shape: ``is_ce``, ``j`` (the line, or a CloudEvent's data with the
    envelope's id, time and subject filled in), ``k`` (the keys of ``j``), the shape markers
    ``m_*`` and ``shape`` (canonical, envelope, otlp, litellm, token_type, ambiguous or
    unrecognized). Its result is a table of its own (``tb_shaped``) that :func:`mapping_sql`
    reads: as a CTE read by one branch per shape, DuckDB pushes each branch's filter into it
    and evaluates the detection once per branch."""
    c = "c"  # the CloudEvent envelope, parsed once (``parsed``)
    ce_data = "case when json_type({c}.data) = 'OBJECT' then {patch} end".format(
        c=c,
        patch=_patch(
            f"{c}.data",
            {
                "event_id": f"{c}.source || '/' || {c}.id",
                "timestamp": f"coalesce({c}.data->>'timestamp', {c}.time)",
                "customer_id": f"coalesce({c}.data->>'customer_id', {c}.subject)",
            },
        ),
    )
    return f"""
with
keyed as (
    select line_idx, raw_line, json_keys(raw_line) as k
    from candidates
    where starts_with(ltrim(raw_line, e' \\t\\r\\n'), '{{') and json_valid(raw_line)
),
parsed as (
    select
        *,
        case when list_contains(k, 'specversion')
            then from_json(raw_line, '{SCHEMAS["cloudevents"]}') end as c
    from keyed
),
-- A CloudEvent is replaced by its data (with the envelope's id, time and subject); one CASE,
-- not a union of two filters, so the keys are listed once per line.
unwrapped as (
    select
        line_idx,
        raw_line,
        list_contains(k, 'specversion') as is_ce,
        case when not is_ce then raw_line else {ce_data}::varchar end as j,
        k
    from parsed
),
lines as (
    select line_idx, raw_line, is_ce, j, case when is_ce then json_keys(j) else k end as k
    from unwrapped
)
select
        *,
        list_has_any(k, {_keys_list(_CANONICAL_KEYS)}) as m_canonical,
        list_contains(k, 'response') and not list_contains(k, 'custom_llm_provider') as m_envelope,
        list_contains(k, 'resourceSpans') as m_otlp,
        list_contains(k, 'custom_llm_provider') as m_litellm,
        list_contains(k, 'tokens') and list_contains(k, 'type') as m_token_type,
        m_canonical::int + m_envelope::int + m_otlp::int + m_litellm::int + m_token_type::int
            as markers,
        case
            when j is null then 'unrecognized'
            when markers > 1 then 'ambiguous'
            when m_canonical then 'canonical'
            when m_envelope then 'envelope'
            when m_otlp and (is_ce or coalesce(json_type(j, '$.resourceSpans'), '') != 'ARRAY')
                then 'unrecognized'
            when m_otlp then 'otlp'
            when m_litellm then 'litellm'
            when m_token_type then 'token_type'
            when list_has_any(k, ['event_id', 'timestamp', 'customer_id', 'model'])
                then 'canonical'
            else 'unrecognized'
        end as shape
    from lines
"""


def mapping_sql(
    otlp_customer_keys: list[str], otlp_feature_keys: list[str], litellm_customer_fields: list[str]
) -> str:
    """The query mapping the lines of table ``tb_shaped`` (:func:`detection_sql`'s result) to
    records (:data:`RESULT_COLUMNS`): ``sub`` is the record's place in its line; a record is
    either its wire fields (mapped here) or ``raw_line``, canonical JSON text the extraction
    reads like any canonical line; a line quarantined here has ``reason_code`` and
    ``reason_detail``; an OTLP line also has one row with its ``skipped`` span count.

    Each line's keys are listed once (its shape comes from them) and the line is parsed once,
    into its shape's schema (:data:`SCHEMAS`); a CloudEvent's data once more. The wire
    fields come out of the parsed structs: no line is written as JSON and parsed again."""
    marker_keys = _keys_list(
        [*_CANONICAL_KEYS, "response", "resourceSpans", "custom_llm_provider", "tokens", "type"]
    )
    identifiers = {f: f"t.{f}" for f in _IDENTIFIERS}
    envelope_known = (*WIRE_FIELDS, "response")
    # Computed once per envelope line (``md`` in ``envelopes``), not once per sub-shape branch.
    envelope_metadata = "md"
    envelope_branches = {field: [] for field in (*TOKEN_FIELDS, *MODALITY_COUNTS, "metadata")}
    for shape in DEFAULT_PROVIDERS:
        fields = _envelope_fields(shape)
        for field in envelope_branches:
            if field == "metadata":
                value = envelope_metadata
                if shape == "anthropic_messages":
                    tools = (
                        "json_object('anthropic.web_search_requests', "
                        "u.server_tool_use.web_search_requests, 'anthropic.web_fetch_requests', "
                        "u.server_tool_use.web_fetch_requests)"
                    )
                    value = (
                        f"case when u.server_tool_use is not null and coalesce(json_type("
                        f"{envelope_metadata}), 'OBJECT') = 'OBJECT' then json_merge_patch("
                        f"coalesce({envelope_metadata}, '{{}}'), {tools}) else "
                        f"{envelope_metadata} end"
                    )
            else:
                value = fields.get(field)
            if value is not None:
                envelope_branches[field].append(f"when {_quote(shape)} then {value}")
    envelope_values = {
        **identifiers,
        "provider": "coalesce(t.provider, case sub "
        + " ".join(f"when {_quote(s)} then {_quote(p)}" for s, p in DEFAULT_PROVIDERS.items())
        + " end)",
        "model": "coalesce(t.model, t.response.model, t.response.modelVersion)",
        **{
            field: f"case sub {' '.join(branches)} end"
            for field, branches in envelope_branches.items()
            if branches
        },
    }

    def first_attr(keys: list[str]) -> str:
        terms = [f"tb_attr(span_attrs, {_quote(k)})" for k in keys]
        terms += [f"tb_attr(res_attrs, {_quote(k)})" for k in keys]
        return "coalesce(" + ", ".join(terms) + ")"

    otlp_values = {
        field: f"tb_attr(span_attrs, {_quote(attr)})" for field, attr in MAPPINGS["otlp"].items()
    }
    otlp_values |= {
        "input_tokens": "coalesce(tb_attr(span_attrs, 'gen_ai.usage.input_tokens'), "
        "tb_attr(span_attrs, 'gen_ai.usage.prompt_tokens'))",
        "output_tokens": "coalesce(tb_attr(span_attrs, 'gen_ai.usage.output_tokens'), "
        "tb_attr(span_attrs, 'gen_ai.usage.completion_tokens'))",
        "event_id": "span.traceId || '/' || span.spanId",
        "trace_id": "span.traceId",
        "timestamp": "strftime(make_timestamp(try_cast(span.endTimeUnixNano as bigint) "
        f"// 1000), {_TS})",
        "customer_id": first_attr(otlp_customer_keys),
        "feature": first_attr(otlp_feature_keys),
        "provider": "coalesce(tb_attr(span_attrs, 'gen_ai.provider.name'), "
        "tb_attr(span_attrs, 'gen_ai.system'))",
        "model": "coalesce(tb_attr(span_attrs, 'gen_ai.request.model'), "
        "tb_attr(span_attrs, 'gen_ai.response.model'))",
        "environment": first_attr(["deployment.environment.name", "deployment.environment"]),
        "status": "case when span.status.code in ('2', 'STATUS_CODE_ERROR') "
        "then 'failed' else 'success' end",
    }
    # LiteLLM's nested fields, read from the line in one pass (one list of paths).
    litellm_paths = [f"$.{f}" for f in litellm_customer_fields] + [
        "$.metadata.session_id",
        "$.metadata.usage_object.prompt_tokens_details.cached_tokens",
        "$.metadata.usage_object.cache_read_input_tokens",
        "$.metadata.usage_object.cache_creation_input_tokens",
        "$.metadata.usage_object.prompt_tokens_details.cache_write_tokens",
        "$.metadata.usage_object.completion_tokens_details.reasoning_tokens",
    ]
    n = len(litellm_customer_fields)

    def x(i: int) -> str:
        return f"x[{n + i}]"

    litellm_values = {
        # In a CloudEvent, the envelope's source/id and subject (filled in as event_id and
        # customer_id) as for every shape; the customer fields of the log still come first.
        "event_id": "case when is_ce then t.event_id else t.id end",
        # Epoch seconds as LiteLLM writes them (else RFC 3339 text); beyond year 5000 it is
        # left for the contract to reject as unparseable.
        "timestamp": "case when try_cast(t.endTime as double) between 0 and 1e11 "
        "then strftime(make_timestamp(round(t.endTime::double * 1000000)::bigint), "
        f"{_TS}) else t.endTime end",
        "customer_id": "coalesce("
        + ", ".join(f"nullif(trim(x[{i + 1}]), '')" for i in range(n))
        + ", case when is_ce then t.customer_id end)",
        # LiteLLM's provider names (gemini, bedrock, vertex_ai...) as the cost card spells
        # providers (gcp.gemini, aws.bedrock, gcp.vertex_ai...): one rule, the card's.
        "provider": card_provider_sql("t.custom_llm_provider"),
        "model": "t.model",
        "status": "case t.status when 'success' then 'success' when 'failure' "
        "then 'failed' else t.status end",
        "trace_id": "t.trace_id",
        "request_group_id": f"coalesce(t.session_id, {x(1)})",
        "input_tokens": "t.prompt_tokens",
        "output_tokens": "t.completion_tokens",
        "cached_input_tokens": f"coalesce({x(2)}, {x(3)})",
        "cache_write_tokens": f"coalesce({x(4)}, {x(5)})",
        "reasoning_tokens": x(6),
    }
    token_kind = "lower(t.type)"
    bad_token_kind = f"coalesce({token_kind}, '') not in {tuple(_INPUT_TYPES + _OUTPUT_TYPES)}"
    token_values = {
        **identifiers,
        "request_group_id": "coalesce(t.request_id, t.requestId, t.request_group_id)",
        "input_tokens": f"case when {token_kind} in {tuple(_INPUT_TYPES)} "
        "then t.tokens else '0' end",
        "output_tokens": f"case when {token_kind} in {tuple(_OUTPUT_TYPES)} "
        "then t.tokens else '0' end",
        "metadata": _metadata((*WIRE_FIELDS, "tokens", "type", "request_id", "requestId")),
        "reason_code": f"case when {bad_token_kind} then 'unknown_token_type' end",
        "reason_detail": f"case when {bad_token_kind} then 'data.type=' || "
        "coalesce('\"' || t.type || '\"', 'null') || ': unknown_token_type, expected one of "
        + ", ".join(_INPUT_TYPES + _OUTPUT_TYPES)
        + "' end",
    }
    usage_keys = "array_to_string(coalesce(json_keys(j, '$.response.usage'), []), ', ')"
    envelope_values |= {
        "reason_code": """case sub
            when 'ambiguous' then 'ambiguous_format'
            when 'unrecognized' then 'unrecognized_format'
            when 'unreported' then 'usage_not_reported'
        end""",
        "reason_detail": f"""case sub
            when 'ambiguous' then
                'response.usage keys [' || {usage_keys} || '] with provider '
                || coalesce('"' || t.provider || '"', 'absent')
                || ' fit more than one provider shape: ambiguous_format, expected one usage '
                || 'object and, for input_tokens/output_tokens alone, provider anthropic or openai'
            when 'unrecognized' then
                case
                    when json_type(j, '$.response') not in ('OBJECT', 'NULL')
                        then 'response is ' || json_type(j, '$.response')
                    when json_type(j, '$.response.usageMetadata') not in ('OBJECT', 'NULL')
                        then 'response.usageMetadata is '
                        || json_type(j, '$.response.usageMetadata')
                    when json_type(j, '$.response.usage') not in ('OBJECT', 'NULL')
                        then 'response.usage is ' || json_type(j, '$.response.usage')
                    else 'response.usage keys [' || {usage_keys} || ']'
                end
                || ': unrecognized_format, expected the usage object of a supported provider'
            when 'unreported' then
                'response has no usage or usageMetadata (status '
                || coalesce('"' || t.status || '"', 'absent')
                || '): usage_not_reported, its usage is unknown, not zero'
        end""",
    }
    unrecognized_detail = f"""case
            when is_ce and j is null then
                'CloudEvent data is ' || coalesce(json_type(raw_line, '$.data'), 'absent')
                || ' (keys [' || array_to_string(json_keys(raw_line), ', ') || ']): '
                || 'unrecognized_format, expected data to be a JSON object'
            when shape = 'unrecognized' then
                'keys [' || array_to_string(k[:20], ', ') || ']'
                || case when len(k) > 20 then ' and ' || (len(k) - 20) || ' more' else '' end
                || case when is_ce then ' (in CloudEvent data)' else '' end
                || ': unrecognized_format, expected a canonical event, an envelope with a '
                || 'provider response, OTLP JSON (not in a CloudEvent), a LiteLLM spend log or '
                || 'a per-token-type event'
            else
                'keys ['
                || array_to_string(list_filter(k, lambda x: list_contains({marker_keys}, x)), ', ')
                || '] belong to '
                || array_to_string(list_filter([
                    case when m_canonical then 'canonical' end,
                    case when m_envelope then 'envelope (response)' end,
                    case when m_otlp then 'otlp' end,
                    case when m_litellm then 'litellm' end,
                    case when m_token_type then 'token_type' end
                ], lambda x: x is not null), ' and ')
                || ': ambiguous_format, expected the keys of one shape'
        end"""
    fallback_event_id = (
        "case when is_ce then (raw_line->>'source') || '/' || (raw_line->>'id') "
        "else raw_line->>'event_id' end"
    )
    return f"""
with
shaped as (select * replace (case when is_ce then j else raw_line end as j) from tb_shaped),
envelopes as (
    select
        *,
        t.response.usage as u,
        t.response.usageMetadata as um,
        lower(t.provider) as provider_name,
        {_metadata(envelope_known)} as md
    from (
        select *, from_json(j, '{SCHEMAS["envelope"]}') as t from shaped where shape = 'envelope'
    )
),
families as (
    select
        *,
        coalesce(um.promptTokenCount, um.candidatesTokenCount, um.responseTokenCount,
            um.totalTokenCount, um.thoughtsTokenCount, um.cachedContentTokenCount,
            um.toolUsePromptTokenCount) is not null as f_gemini,
        coalesce(u.inputTokens, u.outputTokens) is not null as f_bedrock,
        coalesce(u.prompt_tokens, u.completion_tokens) is not null as f_chat,
        coalesce(u.input_tokens, u.output_tokens) is not null as f_io,
        u.input_token_details is not null or u.output_token_details is not null as s_realtime,
        u.input_tokens_details is not null
            or u.output_tokens_details.reasoning_tokens is not null as s_responses,
        coalesce(u.cache_read_input_tokens, u.cache_creation_input_tokens) is not null
            or u.cache_creation is not null
            or u.server_tool_use is not null
            or u.output_tokens_details.thinking_tokens is not null as s_anthropic
    from envelopes
),
subshaped as (
    select
        *,
        case
            when f_gemini::int + f_bedrock::int + f_chat::int + f_io::int > 1 then 'ambiguous'
            when f_gemini then 'gemini'
            when f_bedrock then 'bedrock_converse'
            when f_chat then 'openai_chat'
            when f_io and s_realtime::int + s_responses::int + s_anthropic::int > 1
                then 'ambiguous'
            when f_io and s_realtime then 'openai_realtime'
            when f_io and s_responses then 'openai_responses'
            when f_io and s_anthropic then 'anthropic_messages'
            when f_io and provider_name = 'anthropic' then 'anthropic_messages'
            when f_io and provider_name in ('openai', 'azure.ai.openai') then 'openai_responses'
            when f_io and u.total_tokens is not null then 'openai_responses'
            when f_io then 'ambiguous'
            when coalesce(json_type(j, '$.response'), 'NULL') not in ('OBJECT', 'NULL')
                then 'unrecognized'
            when coalesce(json_type(j, '$.response.usage'), 'NULL') = 'NULL'
                and coalesce(json_type(j, '$.response.usageMetadata'), 'NULL') = 'NULL'
                then 'unreported'
            else 'unrecognized'
        end as sub
    from families
),
envelope_records as (
    select
        {_select({"line_idx": "line_idx", "sub": "0", "source_format": "sub", **envelope_values})},
        is_ce
    from subshaped
),
spans as (
    select line_idx, is_ce, unnest(spans) as s, unnest(range(len(spans))) as span_no
    from (
        select
            line_idx,
            is_ce,
            flatten(list_transform(
                coalesce(t.resourceSpans, []),
                lambda rs: list_transform(
                    flatten(list_transform(
                        coalesce(rs.scopeSpans, []), lambda ss: coalesce(ss.spans, [])
                    )),
                    lambda sp: {{'res': rs.resource.attributes, 'span': sp}}
                )
            )) as spans
        from (
            select *, from_json(j, '{SCHEMAS["otlp"]}') as t from shaped where shape = 'otlp'
        )
    )
),
span_attributes as (
    select
        line_idx,
        is_ce,
        span_no,
        s.span as span,
        tb_attrs(s.span.attributes) as span_attrs,
        tb_attrs(s.res) as res_attrs
    from spans
),
genai as (
    select
        *,
        list_has_any(list_transform(span_attrs, lambda a: a.k), [
            'gen_ai.usage.input_tokens', 'gen_ai.usage.output_tokens',
            'gen_ai.usage.prompt_tokens', 'gen_ai.usage.completion_tokens'
        ])
        and coalesce(tb_attr(span_attrs, 'gen_ai.operation.name'), 'chat')
            in {tuple(_GENAI_OPERATIONS)} as is_genai
    from span_attributes
),
otlp_records as (
    select
        {
        _select(
            {"line_idx": "line_idx", "sub": "span_no", "source_format": "'otlp'", **otlp_values}
        )
    },
        is_ce
    from genai
    where is_genai
),
-- Every OTLP line, its GenAI spans or not (a line with none yields no record).
otlp_skipped as (
    select
        {
        _select(
            {
                "line_idx": "shaped.line_idx",
                "source_format": "'otlp'",
                "skipped": "count(genai.line_idx) filter (where not genai.is_genai)",
            }
        )
    },
        false as is_ce
    from shaped
    left join genai on shaped.line_idx = genai.line_idx
    where shaped.shape = 'otlp'
    group by shaped.line_idx
),
litellm_records as (
    select
        {
        _select(
            {"line_idx": "line_idx", "sub": "0", "source_format": "'litellm'", **litellm_values}
        )
    },
        is_ce
    from (
        select
            *,
            from_json(j, '{SCHEMAS["litellm"]}') as t,
            json_extract_string(j, {_keys_list(litellm_paths)}) as x
        from shaped
        where shape = 'litellm'
    )
),
token_records as (
    select
        {
        _select(
            {"line_idx": "line_idx", "sub": "0", "source_format": "'token_type'", **token_values}
        )
    },
        is_ce
    from (
        select *, from_json(j, '{SCHEMAS["token_type"]}') as t
        from shaped
        where shape = 'token_type'
    )
),
other_records as (
    select
        {
        _select(
            {
                "line_idx": "line_idx",
                "sub": "0",
                "raw_line": "case when shape = 'canonical' then j::varchar end",
                "source_format": "shape",
                "reason_code": "case shape when 'ambiguous' then 'ambiguous_format' "
                "when 'unrecognized' then 'unrecognized_format' end",
                "reason_detail": f"case when shape != 'canonical' then {unrecognized_detail} end",
                "event_id": f"case when shape != 'canonical' then {fallback_event_id} end",
            }
        )
    },
        is_ce
    from shaped
    where shape in ('canonical', 'ambiguous', 'unrecognized')
)
select
    * exclude (source_format, is_ce),
    case when is_ce then 'cloudevents:' || source_format else source_format end as source_format
from (
    select * from envelope_records
    union all select * from otlp_records
    union all select * from otlp_skipped
    union all select * from litellm_records
    union all select * from token_records
    union all select * from other_records
)
"""


@dataclass
class MappedLines:
    """Lines made records. ``records``: every record (``obj``, ``line_number``, ``raw_line``
    the canonical JSON text the extraction reads, null for a record mapped to its wire
    fields here, ``native_line`` the line as sent where it was mapped, ``source_format``), in
    line then record order. ``wired``: the wire fields of the records mapped here, with their
    position ``rec_idx`` in ``records``. ``rejected``: lines quarantined for their shape
    (``reason_codes``, ``reason_detail``, ``event_id``, ``raw_line`` as sent,
    ``source_format``). ``skipped``: the non-GenAI OTLP spans per object."""

    records: pl.DataFrame
    wired: pl.DataFrame
    rejected: pl.DataFrame
    skipped: pl.DataFrame


def _settings_list(name: str) -> list[str]:
    return [k.strip() for k in setting(name).split(",") if k.strip()]


def map_lines(lines: pl.DataFrame, con: duckdb.DuckDBPyConnection) -> MappedLines:
    """Map every line of ``lines`` (``obj``, ``line_number``, ``raw_line``) to its records.

    A line without a marker of another shape (:data:`MARKER_TEXTS`) and with a canonical key
    is canonical: it is passed on as it is, without a parse here (the common case). The others
    go through :func:`detection_sql` (into the temporary table ``tb_shaped``, dropped after)
    and :func:`mapping_sql`. A line that is not a JSON object is passed
    on too (extraction quarantines it as invalid JSON)."""
    raw = pl.col("raw_line")
    candidate = pl.any_horizontal(raw.str.contains(t, literal=True) for t in MARKER_TEXTS) | ~(
        pl.any_horizontal(raw.str.contains(t, literal=True) for t in CANONICAL_TEXTS)
    )
    indexed = lines.with_row_index("line_idx")
    mask = indexed.select(candidate.alias("m"))["m"]
    as_canonical = {
        "native_line": pl.lit(None, pl.String),
        "source_format": pl.lit("canonical"),
    }
    if not mask.any():
        return MappedLines(
            lines.with_columns(**as_canonical),
            pl.DataFrame(schema={"rec_idx": pl.UInt32, **dict.fromkeys(WIRE_FIELDS, pl.String)}),
            pl.DataFrame(schema=REJECTED_SCHEMA),
            pl.DataFrame(schema={"obj": pl.UInt32, "skipped": pl.Int64}),
        )
    con.execute(MACROS)
    con.register("candidates", indexed.filter(mask).select("line_idx", "raw_line").to_arrow())
    sql = mapping_sql(
        _settings_list("TOKENBILL_OTLP_CUSTOMER_KEYS"),
        _settings_list("TOKENBILL_OTLP_FEATURE_KEYS"),
        _settings_list("TOKENBILL_LITELLM_CUSTOMER_FIELDS"),
    )
    # A line's ``j`` is kept only for a CloudEvent (its data); any other line's is the line.
    con.execute(
        "create or replace temp table tb_shaped as select * replace "
        f"(case when is_ce then j end as j) from ({detection_sql()})"
    )
    try:
        result = (
            con.sql(sql)
            .pl()
            .with_columns(pl.col("line_idx").cast(pl.UInt32), pl.col("sub").cast(pl.Int64))
        )
    finally:
        con.execute("drop table if exists tb_shaped")
        con.unregister("candidates")
    seen = result["line_idx"].unique()
    place = indexed.select("line_idx", "obj", "line_number", pl.col("raw_line").alias("sent"))
    kept = result.filter(pl.col("reason_code").is_null() & pl.col("skipped").is_null())
    passed = indexed.filter(~pl.col("line_idx").is_in(seen.implode())).select(
        "line_idx", pl.lit(0, pl.Int64).alias("sub"), "obj", "line_number", "raw_line",
        **as_canonical,
    )  # fmt: skip
    mapped = kept.join(place, on="line_idx").select(
        "line_idx",
        "sub",
        "obj",
        "line_number",
        "raw_line",
        pl.when(pl.col("raw_line").is_null() | (pl.col("raw_line") != pl.col("sent")))
        .then("sent")
        .alias("native_line"),
        "source_format",
        *WIRE_FIELDS,
    )
    everything = (
        pl.concat([passed, mapped], how="diagonal")
        .sort("line_idx", "sub")
        .with_row_index("rec_idx")
    )
    records = everything.select("obj", "line_number", "raw_line", "native_line", "source_format")
    wired = everything.filter(pl.col("raw_line").is_null()).select("rec_idx", *WIRE_FIELDS)
    rejected = (
        result.filter(pl.col("reason_code").is_not_null())
        .drop("raw_line")
        .join(place, on="line_idx")
        .sort("line_idx")
        .select(
            "obj",
            "line_number",
            "event_id",
            pl.concat_list("reason_code").alias("reason_codes"),
            "reason_detail",
            pl.col("sent").alias("raw_line"),
            "source_format",
        )
    )
    skipped = (
        result.filter(pl.col("skipped").is_not_null())
        .join(place, on="line_idx")
        .group_by("obj")
        .agg(pl.col("skipped").sum().cast(pl.Int64))
    )
    return MappedLines(records, wired, rejected.cast(REJECTED_SCHEMA), skipped)


REJECTED_SCHEMA = {
    "obj": pl.UInt32,
    "line_number": pl.Int64,
    "event_id": pl.String,
    "reason_codes": pl.List(pl.String),
    "reason_detail": pl.String,
    "raw_line": pl.String,
    "source_format": pl.String,
}


def native_names(source_format: pl.Expr, detail: pl.Expr) -> pl.Expr:
    """The native fields a quarantine detail's canonical fields were mapped from, e.g.
    ``(anthropic_messages: input_tokens = response.usage.input_tokens + ...)``; null for a
    canonical record. One expression per (shape, field): no Python per row."""
    parts = []
    for shape, fields in MAPPINGS.items():
        of_shape = source_format.str.strip_prefix("cloudevents:") == shape
        for field, native in fields.items():
            named = detail.str.contains(f"(^|[ ;(]){field}[ =(]")
            parts.append(pl.when(of_shape & named).then(pl.lit(f"{field} = {native}")))
    names = pl.concat_str(parts, separator="; ", ignore_nulls=True)
    return (
        pl.when(names != "")
        .then(pl.format("{} (mapped from {}: {})", detail, source_format, names))
        .otherwise(detail)
    )
