"""Producer shapes: what a line of an object may look like, and how it becomes canonical.

tokenbill reads usage as producers already write it. Each JSON line (or Parquet row, encoded
as a JSON object) is recognised from its *keys* and mapped to the canonical usage event
(``contracts/usage_event.py``), which then passes the same contract as a canonical line. The
mapping is one DuckDB query over all the lines of a batch (no Python per event); lines that
can only be canonical skip it.

Detection (deterministic; the first matching rule decides; ``record`` = what one line yields)
-----------------------------------------------------------------------------------------------
1. ``specversion`` at top level: a **CloudEvents 1.0** envelope. Its ``data`` (an object) is
   detected again with rules 3-7 (OTLP inside CloudEvents is not accepted), after
   ``event_id = <source>/<id>`` (the idempotency key), ``timestamp = data.timestamp`` else
   ``time``, ``customer_id = data.customer_id`` else ``subject`` are filled in. The shape is
   then reported as ``cloudevents:<inner shape>``. ``data`` absent or not an object
   (``data_base64``): ``unrecognized_format``.
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
   ``provider = custom_llm_provider``, ``model``, ``status`` success -> success, failure ->
   failed, ``trace_id = trace_id``, ``request_group_id = session_id`` (else
   ``metadata.session_id``). Tokens: ``prompt_tokens`` / ``completion_tokens`` (LiteLLM's are
   inclusive: it adds Anthropic's cache reads and writes to the prompt), cached =
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
create or replace macro tb_detail_sum(arr, field, value, amount) as
    case when json_type(arr) = 'ARRAY' then tb_sum(list_transform(
        list_filter(json_extract(arr, '$[*]'), lambda e: upper(e->>field) = value),
        lambda e: e->>amount)) end;
create or replace macro tb_attr(attrs, name) as list_filter(attrs, lambda a: a.k = name)[1].v;
create or replace macro tb_attrs(obj) as list_transform(
    coalesce(json_extract(obj, '$.attributes[*]'), []),
    lambda a: {'k': a->>'key', 'v': coalesce(a->>'$.value.stringValue', a->>'$.value.intValue',
        a->>'$.value.doubleValue', a->>'$.value.boolValue')});
"""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _keys_list(keys: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_quote(k) for k in keys) + "]"


def _patch(base: str, fields: dict[str, str]) -> str:
    """``base`` (JSON) with ``fields`` set; a null value removes the key (JSON merge patch)."""
    pairs = ", ".join(f"{_quote(k)}, {v}" for k, v in fields.items())
    return f"json_merge_patch({base}, json_object({pairs}))"


def _envelope_fields(shape: str) -> dict[str, str]:
    """Canonical field -> SQL (text) for one envelope sub-shape; ``u`` is the usage object."""
    u = "u"
    g = lambda path: f"({u}->>'$.{path}')"  # noqa: E731
    if shape == "openai_chat":
        return {
            "input_tokens": g("prompt_tokens"),
            "cached_input_tokens": g("prompt_tokens_details.cached_tokens"),
            "cache_write_tokens": g("prompt_tokens_details.cache_write_tokens"),
            "audio_input_tokens": g("prompt_tokens_details.audio_tokens"),
            "image_input_tokens": g("prompt_tokens_details.image_tokens"),
            "output_tokens": g("completion_tokens"),
            "reasoning_tokens": g("completion_tokens_details.reasoning_tokens"),
            "audio_output_tokens": g("completion_tokens_details.audio_tokens"),
        }
    if shape == "openai_responses":
        return {
            "input_tokens": g("input_tokens"),
            "cached_input_tokens": g("input_tokens_details.cached_tokens"),
            "cache_write_tokens": g("input_tokens_details.cache_write_tokens"),
            "output_tokens": g("output_tokens"),
            "reasoning_tokens": g("output_tokens_details.reasoning_tokens"),
        }
    if shape == "openai_realtime":
        return {
            "input_tokens": g("input_tokens"),
            "cached_input_tokens": g("input_token_details.cached_tokens"),
            "audio_input_tokens": g("input_token_details.audio_tokens"),
            "image_input_tokens": g("input_token_details.image_tokens"),
            "output_tokens": g("output_tokens"),
            "audio_output_tokens": g("output_token_details.audio_tokens"),
            "image_output_tokens": g("output_token_details.image_tokens"),
        }
    if shape == "anthropic_messages":
        return {
            "input_tokens": f"tb_add([{g('input_tokens')}, {g('cache_read_input_tokens')}, "
            f"{g('cache_creation_input_tokens')}])",
            "cached_input_tokens": g("cache_read_input_tokens"),
            "cache_write_tokens": g("cache_creation_input_tokens"),
            "cache_write_5m_tokens": g("cache_creation.ephemeral_5m_input_tokens"),
            "cache_write_1h_tokens": g("cache_creation.ephemeral_1h_input_tokens"),
            "output_tokens": g("output_tokens"),
            "reasoning_tokens": g("output_tokens_details.thinking_tokens"),
        }
    if shape == "bedrock_converse":
        details = f"({u}->'$.cacheDetails')"
        return {
            "input_tokens": f"tb_add([{g('inputTokens')}, {g('cacheReadInputTokens')}, "
            f"{g('cacheWriteInputTokens')}])",
            "cached_input_tokens": g("cacheReadInputTokens"),
            "cache_write_tokens": g("cacheWriteInputTokens"),
            "cache_write_5m_tokens": f"tb_detail_sum({details}, 'ttl', '5M', 'inputTokens')",
            "cache_write_1h_tokens": f"tb_detail_sum({details}, 'ttl', '1H', 'inputTokens')",
            "output_tokens": g("outputTokens"),
        }
    if shape == "gemini":
        um = "um"
        m = lambda path: f"({um}->>'$.{path}')"  # noqa: E731
        prompt = f"coalesce({m('promptTokenCount')}, '0')"
        cand = f"coalesce({m('candidatesTokenCount')}, {m('responseTokenCount')}, '0')"
        tool, thoughts, total = (
            m("toolUsePromptTokenCount"),
            m("thoughtsTokenCount"),
            m("totalTokenCount"),
        )
        parts = f"[{prompt}, {cand}, {tool}, {thoughts}, {total}]"
        out_details = (
            f"coalesce({um}->'$.candidatesTokensDetails', {um}->'$.responseTokensDetails')"
        )
        in_details = f"({um}->'$.promptTokensDetails')"
        return {
            "input_tokens": f"tb_add([{prompt}, {tool}])",
            "cached_input_tokens": m("cachedContentTokenCount"),
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
                f"{kind.lower()}_{side}_tokens": f"tb_detail_sum({details}, 'modality', "
                f"'{kind}', 'tokenCount')"
                for side, details in (("input", in_details), ("output", out_details))
                for kind in ("AUDIO", "IMAGE")
            },
        }
    raise AssertionError(shape)


def mapping_sql(
    otlp_customer_keys: list[str], otlp_feature_keys: list[str], litellm_customer_fields: list[str]
) -> str:
    """The query mapping the lines of table ``candidates`` (``line_idx``, ``raw_line``) to
    records: ``line_idx``, ``sub`` (the record's place in its line), ``raw_line`` (canonical
    JSON, or the line itself), ``source_format``, and for a line quarantined here its
    ``reason_code``, ``reason_detail`` and ``event_id``; plus one row per OTLP line with its
    ``skipped`` span count (``sub`` null, ``raw_line`` null)."""
    marker_keys = _keys_list(
        [*_CANONICAL_KEYS, "response", "resourceSpans", "custom_llm_provider", "tokens", "type"]
    )
    envelope_shapes = (
        "openai_chat",
        "openai_responses",
        "openai_realtime",
        "anthropic_messages",
        "gemini",
        "bedrock_converse",
    )
    envelope_branches = []
    for shape in envelope_shapes:
        fields = _envelope_fields(shape)
        patch = {
            "response": "null",
            "provider": f"coalesce(j->>'provider', {_quote(DEFAULT_PROVIDERS[shape])})",
            "model": "coalesce(j->>'model', j->>'$.response.model', j->>'$.response.modelVersion')",
            **fields,
        }
        line = _patch("j", patch)
        if shape == "anthropic_messages":
            tools = _patch(
                "coalesce(j->'$.metadata', '{}')",
                {
                    "anthropic.web_search_requests": "u->>'$.server_tool_use.web_search_requests'",
                    "anthropic.web_fetch_requests": "u->>'$.server_tool_use.web_fetch_requests'",
                },
            )
            line = (
                f"case when json_type(u, '$.server_tool_use') = 'OBJECT' "
                f"then json_merge_patch({line}, json_object('metadata', {tools})) else {line} end"
            )
        envelope_branches.append(f"when {_quote(shape)} then {line}")

    def first_attr(keys: list[str]) -> str:
        terms = [f"tb_attr(span_attrs, {_quote(k)})" for k in keys]
        terms += [f"tb_attr(res_attrs, {_quote(k)})" for k in keys]
        return "coalesce(" + ", ".join(terms) + ")"

    otlp_counts = {
        field: f"tb_attr(span_attrs, {_quote(attr)})" for field, attr in MAPPINGS["otlp"].items()
    }
    otlp_counts["input_tokens"] = (
        "coalesce(tb_attr(span_attrs, 'gen_ai.usage.input_tokens'), "
        "tb_attr(span_attrs, 'gen_ai.usage.prompt_tokens'))"
    )
    otlp_counts["output_tokens"] = (
        "coalesce(tb_attr(span_attrs, 'gen_ai.usage.output_tokens'), "
        "tb_attr(span_attrs, 'gen_ai.usage.completion_tokens'))"
    )
    otlp_line = _patch(
        "'{}'",
        {
            "event_id": "(span->>'traceId') || '/' || (span->>'spanId')",
            "trace_id": "span->>'traceId'",
            "timestamp": f"strftime(make_timestamp(try_cast(span->>'endTimeUnixNano' as bigint)"
            f" // 1000), {_TS})",
            "customer_id": first_attr(otlp_customer_keys),
            "feature": first_attr(otlp_feature_keys),
            "provider": "coalesce(tb_attr(span_attrs, 'gen_ai.provider.name'), "
            "tb_attr(span_attrs, 'gen_ai.system'))",
            "model": "coalesce(tb_attr(span_attrs, 'gen_ai.request.model'), "
            "tb_attr(span_attrs, 'gen_ai.response.model'))",
            "environment": first_attr(["deployment.environment.name", "deployment.environment"]),
            "status": "case when span->>'$.status.code' in ('2', 'STATUS_CODE_ERROR') "
            "then 'failed' else 'success' end",
            **otlp_counts,
        },
    )
    uo = "j->'$.metadata.usage_object'"
    litellm_customer = (
        "coalesce("
        + ", ".join(f"nullif(trim(j->>{_quote('$.' + f)}), '')" for f in litellm_customer_fields)
        + ")"
    )
    litellm_line = _patch(
        "'{}'",
        {
            "event_id": "j->>'id'",
            # Epoch seconds as LiteLLM writes them; beyond year 5000 it is left for the
            # contract to reject as unparseable.
            "timestamp": "case when json_type(j, '$.endTime') in ('DOUBLE', 'UBIGINT', 'BIGINT') "
            "and (j->>'endTime')::double between 0 and 1e11 "
            "then strftime(make_timestamp(round((j->>'endTime')::double * 1000000)::bigint), "
            f"{_TS}) else j->>'endTime' end",
            "customer_id": litellm_customer,
            "provider": "j->>'custom_llm_provider'",
            "model": "j->>'model'",
            "status": "case j->>'status' when 'success' then 'success' when 'failure' "
            "then 'failed' else j->>'status' end",
            "trace_id": "j->>'trace_id'",
            "request_group_id": "coalesce(j->>'session_id', j->>'$.metadata.session_id')",
            "input_tokens": "j->>'prompt_tokens'",
            "output_tokens": "j->>'completion_tokens'",
            "cached_input_tokens": f"coalesce({uo}->>'$.prompt_tokens_details.cached_tokens', "
            f"{uo}->>'$.cache_read_input_tokens')",
            "cache_write_tokens": f"coalesce({uo}->>'$.cache_creation_input_tokens', "
            f"{uo}->>'$.prompt_tokens_details.cache_write_tokens')",
            "reasoning_tokens": f"{uo}->>'$.completion_tokens_details.reasoning_tokens'",
        },
    )
    token_kind = "lower(j->>'type')"
    bad_token_kind = f"coalesce({token_kind}, '') not in {tuple(_INPUT_TYPES + _OUTPUT_TYPES)}"
    token_line = _patch(
        "j",
        {
            "tokens": "null",
            "type": "null",
            "request_id": "null",
            "requestId": "null",
            "request_group_id": "coalesce(j->>'request_id', j->>'requestId', "
            "j->>'request_group_id')",
            "input_tokens": f"case when {token_kind} in {tuple(_INPUT_TYPES)} "
            "then j->>'tokens' else '0' end",
            "output_tokens": f"case when {token_kind} in {tuple(_OUTPUT_TYPES)} "
            "then j->>'tokens' else '0' end",
        },
    )
    return f"""
with
unwrapped as (
    select
        line_idx,
        raw_line,
        json_exists(raw_line, '$.specversion') as is_ce,
        case
            when not json_exists(raw_line, '$.specversion') then raw_line::json
            when json_type(raw_line, '$.data') = 'OBJECT' then {
        _patch(
            "raw_line->'$.data'",
            {
                "event_id": "(raw_line->>'source') || '/' || (raw_line->>'id')",
                "timestamp": "coalesce(raw_line->>'$.data.timestamp', raw_line->>'time')",
                "customer_id": "coalesce(raw_line->>'$.data.customer_id', raw_line->>'subject')",
            },
        )
    }
        end as j
    from candidates
    where json_valid(raw_line) and json_type(raw_line) = 'OBJECT'
),
keyed as (
    select *, coalesce(json_keys(j), []) as k from unwrapped
),
marked as (
    select
        *,
        list_has_any(k, {_keys_list(_CANONICAL_KEYS)}) as m_canonical,
        list_contains(k, 'response') and not list_contains(k, 'custom_llm_provider') as m_envelope,
        list_contains(k, 'resourceSpans') as m_otlp,
        list_contains(k, 'custom_llm_provider') as m_litellm,
        list_contains(k, 'tokens') and list_contains(k, 'type') as m_token_type,
        list_has_any(k, ['event_id', 'timestamp', 'customer_id', 'model']) as has_ids
    from keyed
),
shaped as (
    select
        *,
        m_canonical::int + m_envelope::int + m_otlp::int + m_litellm::int + m_token_type::int
            as markers,
        case
            when j is null then 'unrecognized'
            when markers > 1 then 'ambiguous'
            when m_canonical then 'canonical'
            when m_envelope then 'envelope'
            when m_otlp and (is_ce or json_type(j, '$.resourceSpans') != 'ARRAY')
                then 'unrecognized'
            when m_otlp then 'otlp'
            when m_litellm then 'litellm'
            when m_token_type then 'token_type'
            when has_ids then 'canonical'
            else 'unrecognized'
        end as shape
    from marked
),
envelopes as (
    select
        *,
        j->'$.response.usage' as u,
        j->'$.response.usageMetadata' as um,
        case when json_type(j, '$.response.usage') = 'OBJECT'
            then json_keys(j, '$.response.usage') else [] end as uk,
        lower(j->>'provider') as provider_name
    from shaped
    where shape = 'envelope'
),
families as (
    select
        *,
        json_type(um) = 'OBJECT' as f_gemini,
        list_has_any(uk, ['inputTokens', 'outputTokens']) as f_bedrock,
        list_has_any(uk, ['prompt_tokens', 'completion_tokens']) as f_chat,
        list_has_any(uk, ['input_tokens', 'output_tokens']) as f_io,
        list_has_any(uk, ['input_token_details', 'output_token_details']) as s_realtime,
        list_contains(uk, 'input_tokens_details')
            or json_exists(u, '$.output_tokens_details.reasoning_tokens') as s_responses,
        list_has_any(uk, ['cache_read_input_tokens', 'cache_creation_input_tokens',
            'cache_creation', 'server_tool_use'])
            or json_exists(u, '$.output_tokens_details.thinking_tokens') as s_anthropic
    from envelopes
),
subshaped as (
    select
        *,
        case
            when json_type(j, '$.response') not in ('OBJECT', 'NULL') then 'unrecognized'
            when coalesce(f_gemini, false)::int + f_bedrock::int + f_chat::int + f_io::int > 1
                then 'ambiguous'
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
            when f_io and list_contains(uk, 'total_tokens') then 'openai_responses'
            when f_io then 'ambiguous'
            when coalesce(json_type(u), 'NULL') = 'NULL'
                and coalesce(json_type(um), 'NULL') = 'NULL' then 'unreported'
            else 'unrecognized'
        end as sub
    from families
),
envelope_records as (
    select
        line_idx,
        0 as sub,
        case sub {" ".join(envelope_branches)} end::varchar as raw_line,
        sub as source_format,
        case sub
            when 'ambiguous' then 'ambiguous_format'
            when 'unrecognized' then 'unrecognized_format'
            when 'unreported' then 'usage_not_reported'
        end as reason_code,
        case sub
            when 'ambiguous' then
                'response.usage keys [' || array_to_string(uk, ', ') || '] with provider '
                || coalesce('"' || (j->>'provider') || '"', 'absent')
                || ' fit more than one provider shape: ambiguous_format, expected one usage '
                || 'object and, for input_tokens/output_tokens alone, provider anthropic or openai'
            when 'unrecognized' then
                case
                    when json_type(j, '$.response') not in ('OBJECT', 'NULL')
                        then 'response is ' || json_type(j, '$.response')
                    when json_type(um) is not null and json_type(um) != 'OBJECT'
                        then 'response.usageMetadata is ' || json_type(um)
                    when json_type(u) != 'OBJECT' then 'response.usage is ' || json_type(u)
                    else 'response.usage keys [' || array_to_string(uk, ', ') || ']'
                end
                || ': unrecognized_format, expected the usage object of a supported provider'
            when 'unreported' then
                'response has no usage or usageMetadata (status '
                || coalesce('"' || (j->>'status') || '"', 'absent')
                || '): usage_not_reported, its usage is unknown, not zero'
        end as reason_detail,
        j->>'event_id' as event_id,
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
                coalesce(json_extract(j, '$.resourceSpans[*]'), []),
                lambda rs: list_transform(
                    coalesce(json_extract(rs, '$.scopeSpans[*].spans[*]'), []),
                    lambda sp: {{'res': rs->'$.resource', 'span': sp}}
                )
            )) as spans
        from shaped
        where shape = 'otlp'
    )
),
span_attributes as (
    select
        line_idx,
        is_ce,
        span_no,
        s.span as span,
        tb_attrs(s.span) as span_attrs,
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
        line_idx,
        span_no as sub,
        {otlp_line}::varchar as raw_line,
        'otlp' as source_format,
        null as reason_code,
        null as reason_detail,
        null as event_id,
        is_ce
    from genai
    where is_genai
),
-- Every OTLP line, its GenAI spans or not (a line with none yields no record).
otlp_skipped as (
    select shaped.line_idx, count(genai.line_idx) filter (where not genai.is_genai) as skipped
    from shaped
    left join genai on shaped.line_idx = genai.line_idx
    where shaped.shape = 'otlp'
    group by shaped.line_idx
),
other_records as (
    select
        line_idx,
        0 as sub,
        case shape
            when 'canonical' then j::varchar
            when 'litellm' then {litellm_line}::varchar
            when 'token_type' then {token_line}::varchar
        end as raw_line,
        shape as source_format,
        case
            when shape = 'ambiguous' then 'ambiguous_format'
            when shape = 'unrecognized' then 'unrecognized_format'
            when shape = 'token_type'
                and {bad_token_kind}
                then 'unknown_token_type'
        end as reason_code,
        case
            when shape = 'ambiguous' then
                'keys [' || array_to_string(list_filter(k, lambda x: list_contains({
        marker_keys
    }, x)), ', ')
                || '] belong to '
                || array_to_string(list_filter([
                    case when m_canonical then 'canonical' end,
                    case when m_envelope then 'envelope (response)' end,
                    case when m_otlp then 'otlp' end,
                    case when m_litellm then 'litellm' end,
                    case when m_token_type then 'token_type' end
                ], lambda x: x is not null), ' and ')
                || ': ambiguous_format, expected the keys of one shape'
            when shape = 'unrecognized' and is_ce and j is null then
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
            when shape = 'token_type' and {bad_token_kind} then
                'data.type=' || coalesce('"' || (j->>'type') || '"', 'null')
                || ': unknown_token_type, expected one of '
                || {_quote(", ".join(_INPUT_TYPES + _OUTPUT_TYPES))}
        end as reason_detail,
        coalesce(
            j->>'event_id',
            case when is_ce then (raw_line->>'source') || '/' || (raw_line->>'id') end
        ) as event_id,
        is_ce
    from shaped
    where shape in ('canonical', 'litellm', 'token_type', 'ambiguous', 'unrecognized')
)
select
    line_idx,
    sub,
    case when reason_code is null then raw_line end as raw_line,
    case when is_ce then 'cloudevents:' || source_format else source_format end as source_format,
    reason_code,
    reason_detail,
    event_id,
    null::bigint as skipped
from (
    select * from envelope_records
    union all select * from otlp_records
    union all select * from other_records
)
union all
select line_idx, null, null, 'otlp', null, null, null, skipped from otlp_skipped
"""


@dataclass
class MappedLines:
    """Lines made records: ``records`` (``obj``, ``line_number``, ``raw_line`` canonical JSON,
    ``native_line`` the line as sent where it was mapped, ``source_format``), in line then
    record order; ``rejected``, lines quarantined for their shape (``reason_code``,
    ``reason_detail``, ``event_id``, ``raw_line`` as sent, ``source_format``); ``skipped``,
    the non-GenAI OTLP spans per object (``obj``, ``skipped``)."""

    records: pl.DataFrame
    rejected: pl.DataFrame
    skipped: pl.DataFrame


def _settings_list(name: str) -> list[str]:
    return [k.strip() for k in setting(name).split(",") if k.strip()]


def map_lines(lines: pl.DataFrame, con: duckdb.DuckDBPyConnection) -> MappedLines:
    """Map every line of ``lines`` (``obj``, ``line_number``, ``raw_line``) to its records.

    A line without a marker of another shape (:data:`MARKER_TEXTS`) and with a canonical key
    is canonical: it is passed on as it is, without a parse here (the common case). The others
    go through :func:`mapping_sql` in one query. A line that is not a JSON object is passed
    on too (extraction quarantines it as invalid JSON)."""
    raw = pl.col("raw_line")
    candidate = pl.any_horizontal(raw.str.contains(t, literal=True) for t in MARKER_TEXTS) | ~(
        pl.any_horizontal(raw.str.contains(t, literal=True) for t in CANONICAL_TEXTS)
    )
    indexed = lines.with_row_index("line_idx")
    mask = indexed.select(candidate.alias("m"))["m"]
    empty_rejected = pl.DataFrame(schema=REJECTED_SCHEMA)
    empty_skipped = pl.DataFrame(schema={"obj": pl.UInt32, "skipped": pl.Int64})
    as_canonical = {
        "native_line": pl.lit(None, pl.String),
        "source_format": pl.lit("canonical"),
    }
    if not mask.any():
        return MappedLines(lines.with_columns(**as_canonical), empty_rejected, empty_skipped)
    con.execute(MACROS)
    con.register("candidates", indexed.filter(mask).select("line_idx", "raw_line").to_arrow())
    sql = mapping_sql(
        _settings_list("TOKENBILL_OTLP_CUSTOMER_KEYS"),
        _settings_list("TOKENBILL_OTLP_FEATURE_KEYS"),
        _settings_list("TOKENBILL_LITELLM_CUSTOMER_FIELDS"),
    )
    result = con.sql(sql).pl().with_columns(pl.col("line_idx").cast(pl.UInt32))
    con.unregister("candidates")
    seen = result["line_idx"].unique()
    passed = indexed.filter(~pl.col("line_idx").is_in(seen.implode())).with_columns(
        sub=pl.lit(0, pl.Int64), **as_canonical
    )
    mapped = (
        result.filter(pl.col("raw_line").is_not_null())
        .select("line_idx", "sub", "raw_line", "source_format")
        .join(
            indexed.select("line_idx", "obj", "line_number", pl.col("raw_line").alias("native")),
            on="line_idx",
        )
        .select(
            "line_idx",
            "obj",
            "line_number",
            "raw_line",
            pl.when(pl.col("raw_line") != pl.col("native")).then("native").alias("native_line"),
            "source_format",
            pl.col("sub").cast(pl.Int64),
        )
    )
    records = (
        pl.concat([passed.select(mapped.columns), mapped])
        .sort("line_idx", "sub")
        .select("obj", "line_number", "raw_line", "native_line", "source_format")
    )
    rejected = (
        result.filter(pl.col("reason_code").is_not_null())
        .drop("raw_line")
        .join(indexed.select("line_idx", "obj", "line_number", "raw_line"), on="line_idx")
        .sort("line_idx")
        .select(
            "obj",
            "line_number",
            "event_id",
            pl.concat_list("reason_code").alias("reason_codes"),
            "reason_detail",
            "raw_line",
            "source_format",
        )
    )
    skipped = (
        result.filter(pl.col("skipped").is_not_null())
        .join(indexed.select("line_idx", "obj"), on="line_idx")
        .group_by("obj")
        .agg(pl.col("skipped").sum().cast(pl.Int64))
    )
    return MappedLines(records, rejected.cast(REJECTED_SCHEMA), skipped)


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
