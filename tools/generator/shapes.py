"""The wire shapes the generator writes besides the canonical event (issue 14).

Producers rarely send tokenbill's own shape: their backends keep the provider's response,
gateways write spend logs, tracing exports OpenTelemetry spans and metering pipelines speak
CloudEvents. The generator first simulates canonical attempts (the manifest is computed from
them), then re-shapes some of them on the wire. The shape never changes what the attempt is:
ingestion maps every shape back to the same canonical counts, so the manifest still predicts
the warehouse exactly. Where a shape cannot say everything, only attempts it can say are
sent in it:

* Realtime usage reports no reasoning: only attempts without reasoning tokens.
* A per-token-type gateway event carries one count (input or output) and no attempt: only
  first, successful attempts without cached, cache-write or reasoning tokens. Ingestion rates
  its two lines row by row, so such an attempt lands as two events (the manifest says so).
* OTLP spans carry no attempt or request group: only first attempts, successful or failed
  (span status ERROR).
* LiteLLM knows ``success`` and ``failure`` only: only such attempts.

Malformed lines get a shape too: the shape-only reasons (ambiguous, unrecognised, unreported
usage, an unknown token type) always, and a contract fault in native fields where the reason
has one for the attempt's provider (``BAD_SHAPES``).

Everything here is a polars expression over the generator's wire frame (one row per attempt)
or numpy over an hour's plan, so rendering stays vectorised. ``REPORTED`` are the names of
ingestion's format audit (``source_format``), as the manifest counts them.
"""

from __future__ import annotations

import functools

import numpy as np
import polars as pl

from contracts.usage_event import SHAPE_REASONS

CANONICAL = "canonical"
OPENAI_CHAT = "openai_chat"
OPENAI_RESPONSES = "openai_responses"
OPENAI_REALTIME = "openai_realtime"
ANTHROPIC = "anthropic_messages"
GEMINI = "gemini"
BEDROCK = "bedrock_converse"
OTLP = "otlp"
LITELLM = "litellm"
CLOUDEVENTS = "cloudevents"
TOKEN_TYPE = "token_type"

SHAPES = (
    CANONICAL,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    OPENAI_REALTIME,
    ANTHROPIC,
    GEMINI,
    BEDROCK,
    OTLP,
    LITELLM,
    CLOUDEVENTS,
    TOKEN_TYPE,
)
S = {name: i for i, name in enumerate(SHAPES)}
#: The shapes whose line holds one event and the envelope of a provider's response.
NATIVE = (OPENAI_CHAT, OPENAI_RESPONSES, OPENAI_REALTIME, ANTHROPIC, GEMINI, BEDROCK)
#: Shapes that write one line per attempt (a resend is the same line again).
ONE_LINE = (CANONICAL, *NATIVE, LITELLM, CLOUDEVENTS)
#: Lines per event of each reason only a producer shape can have (contracts' SHAPE_REASONS;
#: a mixed month holds at least two of each).
SHAPE_BAD_RATE = 0.0002

#: Share of attempts per family in a mixed month (before eligibility falls back to native).
FAMILY_P = {CANONICAL: 0.40, "native": 0.27, OTLP: 0.12, LITELLM: 0.10, CLOUDEVENTS: 0.07,
            TOKEN_TYPE: 0.04}  # fmt: skip
#: OpenAI attempts sent natively: Chat Completions, Responses, Realtime.
OPENAI_P = (0.6, 0.3, 0.1)
#: Spans per OTLP line at most (a collector's batch).
OTLP_BATCH = 64
#: Share of malformed canonical lines sent in a producer shape instead (where the reason has
#: a native form for the attempt's provider, see BAD_SHAPES).
SHAPED_BAD_P = 0.5

_OPENAI, _ANTHROPIC, _GEMINI, _BEDROCK = range(4)
_SUCCESS, _FAILED = 0, 1  # indices into contracts.usage_event.STATUSES
_ANY = -1
#: (contract reason, provider or _ANY) -> the shape a malformed line of that reason may be
#: sent in, with the native fault :func:`bad_overrides` gives it.
BAD_SHAPES = {
    ("subset_invariant_broken", _OPENAI): OPENAI_CHAT,  # cached_tokens > prompt_tokens
    ("subset_invariant_broken", _GEMINI): GEMINI,  # cachedContentTokenCount > promptTokenCount
    ("subset_invariant_broken", _ANY): OTLP,  # cache_read.input_tokens > input_tokens
    ("negative_count", _OPENAI): OPENAI_RESPONSES,  # output_tokens < 0
    ("count_out_of_range", _ANTHROPIC): ANTHROPIC,  # cache_read_input_tokens >= 10**9
    ("wrong_type", _BEDROCK): BEDROCK,  # outputTokens "12.0"
    ("wrong_type", _ANY): LITELLM,  # prompt_tokens "1200 tokens"
    ("missing_required_field", _ANY): CLOUDEVENTS,  # no subject, no data.customer_id
}


def assign(
    rows: dict[str, np.ndarray],
    bad: np.ndarray,
    reasons: tuple[str, ...],
    parquet: np.ndarray,
    one_line: np.ndarray,
    rng,
) -> dict[str, np.ndarray]:
    """The wire shape of every attempt of one hour.

    ``bad``: the line-level reason of each row (index into ``reasons``; -1: valid);
    ``parquet``: rows in a Parquet object (canonical); ``one_line``: rows that must be one
    line of their own (resent ones).
    Returns per row ``shape`` (index into SHAPES), ``ce_inner`` (the shape of a CloudEvent's
    ``data``), ``shape_u`` (a uniform draw for the shape's own variants) and the counts the
    shapes add to the canonical ones: ``audio_input_tokens``/``audio_output_tokens``
    (Realtime) and ``cache_write_5m_tokens``/``cache_write_1h_tokens`` (Anthropic, Bedrock),
    0 where the line does not report them.
    """
    n = len(rows["prov"])
    u_family, u_openai, shape_u, u_inner, u_bad, u_audio_in, u_audio_out, u_ttl = rng.random((8, n))
    edges = np.cumsum(list(FAMILY_P.values()))
    family = np.minimum(np.searchsorted(edges, u_family, side="right"), len(edges) - 1)
    names = list(FAMILY_P)
    prov, status, attempt = rows["prov"], rows["status"], rows["attempt"]

    kind = np.searchsorted(np.cumsum(OPENAI_P), u_openai, side="right").clip(0, 2)
    openai = np.array([S[OPENAI_CHAT], S[OPENAI_RESPONSES], S[OPENAI_REALTIME]])[kind]
    no_reasoning = rows["reasoning_tokens"] == 0
    openai = np.where((openai == S[OPENAI_REALTIME]) & ~no_reasoning, S[OPENAI_CHAT], openai)
    by_provider = np.array([S[OPENAI_CHAT], S[ANTHROPIC], S[GEMINI], S[BEDROCK]])
    native = np.where(prov == _OPENAI, openai, by_provider[prov])

    first = attempt == 1
    plain = (
        ((rows["cached_input_tokens"] == 0) | rows["cached_input_tokens_null"])
        & ((rows["cache_write_tokens"] == 0) | rows["cache_write_tokens_null"])
        & ((rows["reasoning_tokens"] == 0) | rows["reasoning_tokens_null"])
    )
    eligible = {
        CANONICAL: np.ones(n, dtype=bool),
        "native": np.ones(n, dtype=bool),
        OTLP: first & ((status == _SUCCESS) | (status == _FAILED)) & ~one_line,
        LITELLM: (status == _SUCCESS) | (status == _FAILED),
        CLOUDEVENTS: np.ones(n, dtype=bool),
        TOKEN_TYPE: first & (status == _SUCCESS) & plain & ~one_line,
    }
    shape = np.full(n, S[CANONICAL], dtype=np.int64)
    for f, name in enumerate(names):
        pick = family == f
        if name == "native":
            shape[pick] = native[pick]
            continue
        ok = pick & eligible[name]
        shape[ok] = S[name]
        shape[pick & ~ok] = native[pick & ~ok]

    # Malformed lines: the shape reasons have their own shape; a contract reason is sent in a
    # producer shape where it has a native form, else canonical.
    table = np.full((len(reasons), 4), S[CANONICAL], dtype=np.int64)  # (reason, provider)
    for r, reason in enumerate(reasons):
        for p in range(4):
            if reason == "unknown_token_type":
                table[r, p] = S[TOKEN_TYPE]
            elif reason in SHAPE_REASONS:
                table[r, p] = by_provider[p]
            elif target := BAD_SHAPES.get((reason, p), BAD_SHAPES.get((reason, _ANY))):
                table[r, p] = S[target]
    is_bad = bad >= 0
    shaped = np.isin(np.array(reasons)[np.maximum(bad, 0)], SHAPE_REASONS) | (u_bad < SHAPED_BAD_P)
    shape = np.where(is_bad, np.where(shaped, table[np.maximum(bad, 0), prov], S[CANONICAL]), shape)
    shape[parquet] = S[CANONICAL]

    ce = shape == S[CLOUDEVENTS]
    no_realtime = np.where(native == S[OPENAI_REALTIME], S[OPENAI_CHAT], native)
    ce_inner = np.where(ce & (u_inner < 0.5), no_realtime, S[CANONICAL])
    ce_inner[is_bad] = S[CANONICAL]
    ce_inner[~ce] = -1
    rendered = np.where(ce, ce_inner, shape)  # the shape the usage counts are written in
    valid = ~is_bad
    realtime = (rendered == S[OPENAI_REALTIME]) & valid
    audio_in = np.where(realtime, np.floor(rows["input_tokens"] * (0.2 + 0.6 * u_audio_in)), 0)
    audio_out = np.where(realtime, np.floor(rows["output_tokens"] * (0.2 + 0.6 * u_audio_out)), 0)
    ttl = np.isin(rendered, [S[ANTHROPIC], S[BEDROCK]]) & valid
    write = np.where(ttl, rows["cache_write_tokens"], 0)
    one_h = np.where(u_ttl < 0.2, write, 0)
    return {
        "shape": shape,
        "ce_inner": ce_inner,
        "shape_u": shape_u,
        "audio_input_tokens": audio_in.astype(np.int64),
        "audio_output_tokens": audio_out.astype(np.int64),
        "cache_write_5m_tokens": (write - one_h).astype(np.int64),
        "cache_write_1h_tokens": one_h.astype(np.int64),
    }


#: The subset counts the shapes add, as the manifest sums them.
ADDED_COUNTS = ("cache_write_5m_tokens", "cache_write_1h_tokens", "audio_input_tokens",
                "audio_output_tokens")  # fmt: skip


#: The names records are reported under in ingestion's format audit (``source_format``): a
#: CloudEvent as ``cloudevents:<shape of its data>``; a line quarantined before it has a
#: shape under the reason's own name (see _UNSHAPED).
_UNSHAPED = {
    "invalid_json": "unparsed",
    "ambiguous_format": "ambiguous",
    "unrecognized_format": "unrecognized",
    "usage_not_reported": "unreported",
}
REPORTED = (
    *(name for name in SHAPES if name not in (CLOUDEVENTS, TOKEN_TYPE)),
    *(f"cloudevents:{name}" for name in (CANONICAL, OPENAI_CHAT, OPENAI_RESPONSES, ANTHROPIC,
                                         GEMINI, BEDROCK, TOKEN_TYPE)),
    *_UNSHAPED.values(),
)  # fmt: skip


def reported(shape: np.ndarray, ce_inner: np.ndarray, bad: np.ndarray, reasons) -> np.ndarray:
    """Index into REPORTED of each row's record(s)."""
    table = np.array(
        [REPORTED.index(name) if name in REPORTED else -1 for name in SHAPES], dtype=np.int64
    )
    out = table[shape]
    ce = shape == S[CLOUDEVENTS]
    inner = [REPORTED.index(f"cloudevents:{name}") if f"cloudevents:{name}" in REPORTED else -1
             for name in SHAPES]  # fmt: skip
    out[ce] = np.array(inner)[ce_inner[ce]]
    out[shape == S[TOKEN_TYPE]] = REPORTED.index("cloudevents:token_type")
    for reason, name in _UNSHAPED.items():
        if reason in reasons:
            out[bad == reasons.index(reason)] = REPORTED.index(name)
    return out


# ---------------------------------------------------------------------------------------------
# JSON text building blocks (values are the generator's own: no escaping needed).


def q(expr: pl.Expr) -> pl.Expr:
    return pl.concat_str([pl.lit('"'), expr, pl.lit('"')])


def n(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String)


def obj(*pairs: tuple[str, pl.Expr | None]) -> pl.Expr:
    """``{"k":v,...}`` of JSON texts; a null value leaves its key out."""
    parts = [pl.concat_str([pl.lit(f'"{k}":'), v]) for k, v in pairs if v is not None]
    body = pl.concat_str(parts, separator=",", ignore_nulls=True)
    return pl.concat_str([pl.lit("{"), body, pl.lit("}")])


def arr(*items: pl.Expr) -> pl.Expr:
    body = pl.concat_str(list(items), separator=",", ignore_nulls=True)
    return pl.concat_str([pl.lit("["), body, pl.lit("]")])


def _c(name: str) -> pl.Expr:
    return pl.col(name)


def _z(name: str) -> pl.Expr:
    return _c(name).fill_null(0)


def _hex(length: int, salt: int) -> pl.Expr:
    """A hex id of ``length`` (<= 32) characters from the row's own random hex (``_h1``,
    ``_h2``: 16 characters each, drawn by the generator per attempt); ``salt`` rotates it."""
    text = pl.concat_str([_c("_h1"), _c("_h2")])
    return pl.concat_str([text.str.slice(salt % 16), text]).str.slice(0, length)


def _uv(i: int) -> pl.Expr:
    """Deterministic uniform in [0, 1) from the row's shape draw (sub-draw i)."""
    return (_c("_shape_u") * (10.0**i)) % 1.0


# ---------------------------------------------------------------------------------------------
# The envelope: canonical identifying fields and dimensions, plus ``provider`` and ``response``.

_ENVELOPE_FIELDS = ("event_id", "timestamp", "customer_id", "subscription_id", "plan", "feature",
                    "environment", "region", "status")  # fmt: skip


def _envelope(response: pl.Expr, model: pl.Expr | None) -> pl.Expr:
    pairs = [(f, q(_c(f))) for f in _ENVELOPE_FIELDS]
    pairs += [
        ("attempt", n(_c("attempt"))),
        ("request_group_id", q(_c("request_group_id"))),
        ("trace_id", q(_c("trace_id"))),
        ("provider", q(_c("provider"))),
        ("model", model),
        ("response", response),
    ]
    return obj(*pairs)


def _reported(usage: pl.Expr) -> pl.Expr:
    """The usage object, absent on a stream cancelled before its final usage chunk."""
    return pl.when(~_c("_no_usage")).then(usage)


def _envelope_model() -> pl.Expr:
    """The envelope names the requested model on about half of the lines; else the response's
    own model field is the model."""
    return pl.when(_uv(3) < 0.5).then(q(_c("model")))


def _chat_usage() -> pl.Expr:
    return obj(
        ("prompt_tokens", n(_c("input_tokens"))),
        ("completion_tokens", n(_c("output_tokens"))),
        ("total_tokens", n(_c("input_tokens") + _c("output_tokens"))),
        ("prompt_tokens_details", obj(("cached_tokens", n(_z("cached_input_tokens"))),
                                      ("audio_tokens", pl.lit("0")))),
        ("completion_tokens_details", obj(
            ("reasoning_tokens", n(_c("reasoning_tokens"))),
            ("audio_tokens", pl.lit("0")),
            ("accepted_prediction_tokens", pl.lit("0")),
            ("rejected_prediction_tokens", pl.lit("0")),
        )),
    )  # fmt: skip


def _openai_chat() -> tuple[pl.Expr, pl.Expr | None]:
    response = obj(
        ("id", q(pl.concat_str([pl.lit("chatcmpl-"), _hex(24, 1)]))),
        ("object", pl.lit('"chat.completion"')),
        ("model", q(_c("model"))),
        ("service_tier", pl.lit('"default"')),
        ("usage", _reported(_chat_usage())),
    )
    return response, _envelope_model()


def _openai_responses() -> tuple[pl.Expr, pl.Expr | None]:
    usage = obj(
        ("input_tokens", n(_c("input_tokens"))),
        ("input_tokens_details", obj(("cached_tokens", n(_z("cached_input_tokens"))),
                                     ("cache_write_tokens", n(_z("cache_write_tokens"))))),
        ("output_tokens", n(_c("output_tokens"))),
        ("output_tokens_details", obj(("reasoning_tokens", n(_c("reasoning_tokens"))))),
        ("total_tokens", n(_c("input_tokens") + _c("output_tokens"))),
    )  # fmt: skip
    status = (
        pl.when(_c("status") == "cancelled")
        .then(pl.lit('"cancelled"'))
        .when(_c("status").is_in(["failed", "retried"]))
        .then(pl.lit('"failed"'))
        .otherwise(pl.lit('"completed"'))
    )
    response = obj(
        ("id", q(pl.concat_str([pl.lit("resp_"), _hex(32, 2)]))),
        ("object", pl.lit('"response"')),
        ("model", q(_c("model"))),
        ("status", status),
        ("usage", usage),
    )
    return response, _envelope_model()


def _openai_realtime() -> tuple[pl.Expr, pl.Expr | None]:
    audio_in, audio_out = _c("audio_input_tokens"), _c("audio_output_tokens")
    usage = obj(
        ("total_tokens", n(_c("input_tokens") + _c("output_tokens"))),
        ("input_tokens", n(_c("input_tokens"))),
        ("output_tokens", n(_c("output_tokens"))),
        ("input_token_details", obj(
            ("cached_tokens", n(_z("cached_input_tokens"))),
            ("text_tokens", n(_c("input_tokens") - audio_in)),
            ("audio_tokens", n(audio_in)),
            ("image_tokens", pl.lit("0")),
        )),
        ("output_token_details", obj(("text_tokens", n(_c("output_tokens") - audio_out)),
                                     ("audio_tokens", n(audio_out)))),
    )  # fmt: skip
    response = obj(
        ("object", pl.lit('"realtime.response"')),
        ("id", q(pl.concat_str([pl.lit("resp_"), _hex(20, 3)]))),
        ("status", pl.when(_c("status") == "cancelled").then(pl.lit('"cancelled"'))
                     .otherwise(pl.lit('"completed"'))),
        ("usage", usage),
    )  # fmt: skip
    return response, q(_c("model"))  # Realtime's response names no model


def _anthropic() -> tuple[pl.Expr, pl.Expr | None]:
    one_h = _c("cache_write_1h_tokens")
    excl = _c("input_tokens") - _z("cached_input_tokens") - _z("cache_write_tokens")
    usage = obj(
        ("input_tokens", n(excl)),
        ("cache_creation_input_tokens", n(_z("cache_write_tokens"))),
        ("cache_read_input_tokens", n(_z("cached_input_tokens"))),
        ("cache_creation", obj(("ephemeral_5m_input_tokens", n(_c("cache_write_5m_tokens"))),
                               ("ephemeral_1h_input_tokens", n(one_h)))),
        ("output_tokens", n(_c("output_tokens"))),
        ("server_tool_use", pl.when((_c("feature") == "rag-search") & (_uv(5) < 0.5))
            .then(obj(("web_search_requests", n((_uv(6) * 3).floor().cast(pl.Int64) + 1)),
                      ("web_fetch_requests", pl.lit("0"))))),
        ("service_tier", pl.lit('"standard"')),
    )  # fmt: skip
    response = obj(
        ("id", q(pl.concat_str([pl.lit("msg_01"), _hex(22, 4)]))),
        ("type", pl.lit('"message"')),
        ("role", pl.lit('"assistant"')),
        ("model", q(_c("model"))),
        ("stop_reason", pl.lit('"end_turn"')),
        ("usage", _reported(usage)),
    )
    return response, _envelope_model()


def _gemini() -> tuple[pl.Expr, pl.Expr | None]:
    """generateContent (thoughts outside the candidates, or already inside them: the total
    tells) and Live (``responseTokenCount``)."""
    thoughts = _z("reasoning_tokens")
    inclusive = _uv(4) < 0.3
    live = (_uv(4) >= 0.3) & (_uv(4) < 0.45)
    tool = pl.when(_c("cached_input_tokens").is_null() & (_uv(5) < 0.2)).then(
        (_c("input_tokens") * 0.1).floor().cast(pl.Int64)
    )
    prompt = _c("input_tokens") - tool.fill_null(0)
    candidates = (
        pl.when(inclusive).then(_c("output_tokens")).otherwise(_c("output_tokens") - thoughts)
    )
    # Either way the total is every token once: it tells whether candidates hold the thoughts.
    total = _c("input_tokens") + _c("output_tokens")
    usage = obj(
        ("promptTokenCount", n(prompt)),
        ("cachedContentTokenCount", n(_c("cached_input_tokens"))),
        ("candidatesTokenCount", pl.when(~live).then(n(candidates))),
        ("responseTokenCount", pl.when(live).then(n(candidates))),
        ("toolUsePromptTokenCount", n(tool)),
        ("thoughtsTokenCount", n(_c("reasoning_tokens"))),
        ("totalTokenCount", n(total)),
        ("promptTokensDetails", arr(obj(("modality", pl.lit('"TEXT"')),
                                        ("tokenCount", n(prompt))))),
    )  # fmt: skip
    response = obj(
        ("responseId", q(_hex(24, 5))),
        ("modelVersion", q(_c("model"))),
        ("usageMetadata", _reported(usage)),
    )
    return response, _envelope_model()


def _bedrock() -> tuple[pl.Expr, pl.Expr | None]:
    one_h, five_m = _c("cache_write_1h_tokens"), _c("cache_write_5m_tokens")
    excl = _c("input_tokens") - _z("cached_input_tokens") - _z("cache_write_tokens")
    details = arr(
        pl.when(one_h > 0).then(obj(("ttl", pl.lit('"1h"')), ("inputTokens", n(one_h)))),
        pl.when(five_m > 0).then(obj(("ttl", pl.lit('"5m"')), ("inputTokens", n(five_m)))),
    )
    usage = obj(
        ("inputTokens", n(excl)),
        ("outputTokens", n(_c("output_tokens"))),
        ("totalTokens", n(_c("input_tokens") + _c("output_tokens"))),
        ("cacheReadInputTokens", n(_z("cached_input_tokens"))),
        ("cacheWriteInputTokens", n(_z("cache_write_tokens"))),
        ("cacheDetails", pl.when(_z("cache_write_tokens") > 0).then(details)),
    )
    response = obj(
        ("stopReason", pl.lit('"end_turn"')),
        ("usage", _reported(usage)),
        ("metrics", obj(("latencyMs", n(_c("_latency_ms"))))),
    )
    return response, q(_c("model"))  # Converse echoes no model id


# ---------------------------------------------------------------------------------------------
# LiteLLM StandardLoggingPayload.


def _epoch_seconds(ms: pl.Expr) -> pl.Expr:
    """Epoch seconds with milliseconds, as LiteLLM's float ``startTime``/``endTime``."""
    return pl.concat_str([n(ms // 1000), pl.lit("."), n(ms % 1000).str.zfill(3)])


def _litellm() -> pl.Expr:
    usage_object = obj(
        ("prompt_tokens", n(_c("input_tokens"))),
        ("completion_tokens", n(_c("output_tokens"))),
        ("total_tokens", n(_c("input_tokens") + _c("output_tokens"))),
        ("prompt_tokens_details", obj(("cached_tokens", n(_c("cached_input_tokens"))))),
        ("completion_tokens_details", obj(("reasoning_tokens", n(_c("reasoning_tokens"))))),
        ("cache_creation_input_tokens", n(_c("cache_write_tokens"))),
        ("cache_read_input_tokens", n(_c("cached_input_tokens"))),
    )
    metadata = obj(
        ("user_api_key_hash", q(_hex(40, 6))),
        ("user_api_key_team_id", q(pl.concat_str([pl.lit("team-"), _c("customer_id")]))),
        ("user_api_key_end_user_id", q(_c("customer_id"))),
        ("usage_object", usage_object),
    )
    end_ms = _c("_inst_ms")
    status = (
        pl.when(_c("status") == "failed").then(pl.lit('"failure"')).otherwise(pl.lit('"success"'))
    )
    return obj(
        ("id", q(_c("event_id"))),
        ("trace_id", q(_c("trace_id"))),
        ("session_id", q(_c("request_group_id"))),
        ("call_type", pl.lit('"acompletion"')),
        ("stream", pl.lit("false")),
        ("status", status),
        ("response_cost", pl.lit("0.0")),
        ("startTime", _epoch_seconds(end_ms - _c("_latency_ms"))),
        ("endTime", _epoch_seconds(end_ms)),
        ("model", q(_c("model"))),
        ("model_group", q(_c("model"))),
        # The demo's proxy names providers as the catalog does (gcp.gemini, aws.bedrock):
        # ingestion takes custom_llm_provider as it is, and prices are per provider.
        ("custom_llm_provider", q(_c("provider"))),
        ("prompt_tokens", n(_c("input_tokens"))),
        ("completion_tokens", n(_c("output_tokens"))),
        ("total_tokens", n(_c("input_tokens") + _c("output_tokens"))),
        ("end_user", q(_c("customer_id"))),
        ("metadata", metadata),
    )


# ---------------------------------------------------------------------------------------------
# CloudEvents 1.0: the canonical body (or a native envelope's response) under ``data``.


def _cloudevents() -> pl.Expr:
    """``data``: the canonical body, or (``_ce_inner``) an envelope's provider response."""
    data = obj(
        *((f, q(_c(f))) for f in ("subscription_id", "plan", "feature", "provider", "model",
                                   "environment", "region", "status")),
        ("attempt", n(_c("attempt"))),
        ("request_group_id", q(_c("request_group_id"))),
        ("trace_id", q(_c("trace_id"))),
        *((f, n(_c(f))) for f in ("input_tokens", "cached_input_tokens", "cache_write_tokens",
                                   "output_tokens", "reasoning_tokens")),
    )  # fmt: skip
    for shape, (response, model) in _responses().items():
        if shape == OPENAI_REALTIME:
            continue
        native = obj(
            *((f, q(_c(f))) for f in ("feature", "environment", "region", "status")),
            ("attempt", n(_c("attempt"))),
            ("request_group_id", q(_c("request_group_id"))),
            ("trace_id", q(_c("trace_id"))),
            ("provider", q(_c("provider"))),
            ("model", model),
            ("response", response),
        )
        data = pl.when(_c("_ce_inner") == S[shape]).then(native).otherwise(data)
    return obj(
        ("specversion", pl.lit('"1.0"')),
        ("id", q(_c("event_id"))),
        ("source", q(pl.concat_str([pl.lit("//tokenbill-demo/"), _c("_app")]))),
        ("type", pl.lit('"com.tokenbill.usage"')),
        ("subject", q(_c("customer_id"))),
        ("time", q(_c("timestamp"))),
        ("datacontenttype", pl.lit('"application/json"')),
        ("data", data),
    )


# ---------------------------------------------------------------------------------------------
# Per-token-type gateway events (OpenMeter/Kong style): one CloudEvent per request and type.


def _token_type_line(kind: str, tokens: pl.Expr) -> pl.Expr:
    request = _c("event_id")
    return obj(
        ("specversion", pl.lit('"1.0"')),
        ("type", pl.lit('"prompt"')),
        ("id", q(pl.concat_str([request, pl.lit(f"-{kind}")]))),
        ("source", pl.lit('"kong-ai-gateway"')),
        ("subject", q(_c("customer_id"))),
        ("time", q(_c("timestamp"))),
        ("data", obj(("tokens", q(n(tokens))), ("model", q(_c("model"))),
                     ("type", pl.lit(f'"{kind}"')), ("request_id", q(request)),
                     ("provider", q(_c("provider"))))),
    )  # fmt: skip


def token_type_lines() -> list[pl.Expr]:
    """The input line and the output line of a per-token-type attempt (counts as strings):
    ingestion rates them row by row, so the attempt lands as two events."""
    return [
        _token_type_line("input", _c("input_tokens")),
        _token_type_line("output", _c("output_tokens")),
    ]


def token_type_total_line() -> pl.Expr:
    """A gateway event of type ``total`` (input + output): quarantined, it would double count."""
    return _token_type_line("total", _c("input_tokens") + _c("output_tokens"))


# ---------------------------------------------------------------------------------------------
# OpenTelemetry GenAI spans as OTLP JSON (the collector's file/S3 exporters).


def _attr(key: str, value: pl.Expr, kind: str = "stringValue") -> pl.Expr:
    inner = q(value) if kind in ("stringValue", "intValue") else value
    return obj(("key", pl.lit(f'"{key}"')), ("value", obj((kind, inner))))


def _count_attr(key: str, name: str) -> pl.Expr:
    """A count attribute: intValue (a string, as protobuf JSON encodes int64), or a
    stringValue for producers that set counts as strings."""
    value = n(_c(name))
    return (
        pl.when(_c(name).is_null())
        .then(None)
        .when(_c("_strings"))
        .then(_attr(key, value))
        .otherwise(_attr(key, value, "intValue"))
    )


def otlp_span() -> pl.Expr:
    """One GenAI span (``chat <model>``) of an attempt."""
    end = pl.concat_str([n(_c("_inst_ms")), pl.lit("000000")])
    start = pl.concat_str([n(_c("_inst_ms") - _c("_latency_ms")), pl.lit("000000")])
    attributes = arr(
        _attr("gen_ai.operation.name", pl.lit("chat")),
        _attr("gen_ai.provider.name", _c("provider")),
        _attr("gen_ai.request.model", _c("model")),
        _attr("gen_ai.response.model", _c("model")),
        _count_attr("gen_ai.usage.input_tokens", "input_tokens"),
        _count_attr("gen_ai.usage.output_tokens", "output_tokens"),
        _count_attr("gen_ai.usage.cache_read.input_tokens", "cached_input_tokens"),
        _count_attr("gen_ai.usage.cache_creation.input_tokens", "cache_write_tokens"),
        _count_attr("gen_ai.usage.reasoning.output_tokens", "reasoning_tokens"),
        pl.when(_c("_customer_on_span")).then(_attr("user.id", _c("customer_id"))),
        pl.when(_c("feature").is_not_null()).then(_attr("tokenbill.feature", _c("feature"))),
    )
    return obj(
        ("traceId", q(_c("_otlp_trace"))),
        ("spanId", q(_c("_span_id"))),
        ("name", q(pl.concat_str([pl.lit("chat "), _c("model")]))),
        ("kind", pl.lit("3")),
        ("startTimeUnixNano", q(start)),
        ("endTimeUnixNano", q(end)),
        ("attributes", attributes),
        ("status", pl.when(_c("status") == "failed")
                     .then(pl.lit('{"code":2,"message":"upstream error"}'))
                     .otherwise(pl.lit("{}"))),
    )  # fmt: skip


def otlp_http_span() -> pl.Expr:
    """A non-GenAI span of the same trace (the app's HTTP handler): skipped by ingestion."""
    end = pl.concat_str([n(_c("_inst_ms") + 5), pl.lit("000000")])
    start = pl.concat_str([n(_c("_inst_ms") - _c("_latency_ms") - 20), pl.lit("000000")])
    return obj(
        ("traceId", q(_c("_otlp_trace"))),
        ("spanId", q(_hex(16, 8))),
        ("name", pl.lit('"POST /v1/assist"')),
        ("kind", pl.lit("2")),
        ("startTimeUnixNano", q(start)),
        ("endTimeUnixNano", q(end)),
        ("attributes", arr(_attr("http.request.method", pl.lit("POST")),
                           _attr("http.response.status_code", pl.lit("200"), "intValue"))),
        ("status", pl.lit("{}")),
    )  # fmt: skip


def otlp_line(spans: pl.Expr) -> pl.Expr:
    """``{"resourceSpans":[...]}`` around the joined spans of one batch (one customer, one
    app: the resource names them)."""
    resource = arr(
        _attr("service.name", pl.concat_str([pl.lit("assistant-"), _c("_app")])),
        pl.when(~_c("_customer_on_span")).then(_attr("tokenbill.customer_id", _c("customer_id"))),
        _attr("deployment.environment.name", _c("environment").fill_null("production")),
    )
    scope = obj(("name", pl.lit('"opentelemetry.instrumentation.genai"')),
                ("version", pl.lit('"0.5b0"')))  # fmt: skip
    resource_spans = obj(
        ("resource", obj(("attributes", resource))),
        ("scopeSpans", arr(obj(("scope", scope), ("spans", arr(spans))))),
    )
    return obj(("resourceSpans", arr(resource_spans)))


# ---------------------------------------------------------------------------------------------


def _responses() -> dict[str, tuple[pl.Expr, pl.Expr | None]]:
    """Per native shape: the provider's response object and the envelope's model (null: the
    response names it)."""
    return {
        OPENAI_CHAT: _openai_chat(),
        OPENAI_RESPONSES: _openai_responses(),
        OPENAI_REALTIME: _openai_realtime(),
        ANTHROPIC: _anthropic(),
        GEMINI: _gemini(),
        BEDROCK: _bedrock(),
    }


@functools.cache
def one_line_exprs() -> dict[str, pl.Expr]:
    """The line of every one-event shape but canonical (rendered by the generator itself)."""
    exprs = {shape: _envelope(*pair) for shape, pair in _responses().items()}
    return exprs | {LITELLM: _litellm(), CLOUDEVENTS: _cloudevents()}


# ---------------------------------------------------------------------------------------------
# Malformed lines in producer shapes: each has exactly one quarantine reason.

_BIG = 1_000_000_000  # >= the contract's MAX_COUNT


def bad_overrides(shape: str, reason: str) -> dict[str, pl.Expr]:
    """Column overrides that give a line of ``shape`` the native fault of ``reason``."""
    inp, out, cached = _c("input_tokens"), _c("output_tokens"), _c("cached_input_tokens")
    if reason == "subset_invariant_broken":  # a cache read larger than the whole prompt
        step = 128 if shape == OPENAI_CHAT else 1
        return {"cached_input_tokens": inp + step}
    if reason == "negative_count":
        return {"output_tokens": -(out + 1), "reasoning_tokens": pl.lit(0, pl.Int64)}
    if reason == "count_out_of_range":  # Anthropic: a cache read of 10**9 tokens
        return {"cached_input_tokens": cached.fill_null(0) + _BIG, "input_tokens": inp + _BIG}
    if reason == "usage_not_reported":
        return {"status": pl.lit("cancelled"), "_no_usage": pl.lit(True)}
    return {}


def bad_line(shape: str, reason: str, line: pl.Expr) -> pl.Expr:
    """The rendered line of ``shape`` (after :func:`bad_overrides`) with the textual fault
    of ``reason``."""
    if reason == "wrong_type" and shape == BEDROCK:
        return line.str.replace(r'"outputTokens":(\d+)', '"outputTokens":"${1}.0"')
    if reason == "wrong_type":  # LiteLLM
        return line.str.replace(r'"prompt_tokens":(\d+)', '"prompt_tokens":"${1} tokens"')
    if reason == "missing_required_field":  # CloudEvents: no subject, no data.customer_id
        return line.str.replace(r',"subject":"[^"]*"', "")
    if reason == "ambiguous_format":  # the canonical counts and the provider's response
        counts = pl.format(',"input_tokens":{},"output_tokens":{}}}', _c("input_tokens"),
                           _c("output_tokens"))  # fmt: skip
        return pl.concat_str([line.str.slice(0, line.str.len_chars() - 1), counts])
    if reason == "unrecognized_format":  # a bare final usage chunk, logged without envelope
        return obj(
            ("id", q(pl.concat_str([pl.lit("chatcmpl-"), _hex(24, 1)]))),
            ("object", pl.lit('"chat.completion.chunk"')),
            ("created", n(_c("_inst_ms") // 1000)),
            ("choices", pl.lit("[]")),
            ("usage", _chat_usage()),
        )
    return line
