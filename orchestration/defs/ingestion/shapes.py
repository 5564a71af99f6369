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
