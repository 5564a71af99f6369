"""Seeded, deterministic, vectorised generator of demo usage-event objects for one month.

What a month looks like (every number below is a module constant):

* ~40 customers (``cus_0001``...) of Zipf-like sizes, each with a subscription, a plan, a
  feature mix, provider preferences and a producer "style" (numeric-string counts like OTel,
  timestamps with a local offset or without milliseconds, omitted defaults, an unknown
  top-level ``sdk_version`` field, a ``metadata`` map, ``retried`` status on retried attempts).
  Customers depend on the seed only, so they are the same across months.
* Traffic follows a diurnal/weekday curve; the month's ``events`` valid unique events are
  allocated to the hours exactly (largest remainder), and each hour is simulated on its own
  random stream (any hour can be recomputed alone). Hours are rendered in small chunks of
  hours, and an hour larger than ``WINDOW_ROWS`` rows (a hot hour, or any hour of a 100M
  month) alone, object by object, in windows of lines gzip-streamed into its body (a
  temporary file past ``SPOOL_BYTES``): rendering memory stays bounded by about
  ``WINDOW_ROWS`` rows whatever the month's or the hour's size (an hour's plan, a few
  hundred bytes a row of numpy arrays, is still whole).
* Calls come from features with log-normal token sizes (fits from the reference traces),
  agent runs of 5-60 calls sharing a ``trace_id``, prompt caching (reads for every provider,
  writes for Anthropic-style providers), reasoning tokens for reasoning models, failed
  attempts followed by retries sharing a ``request_group_id``, and cancelled streams.
* About 0.7% of valid events are sent again (the exact same line or row, in an object of the
  same hour and format family), about 0.3% of lines are malformed, each with exactly one
  line-level quarantine reason of ``contracts.usage_event``; and the month holds one corrupt
  ``.jsonl.gz``, one corrupt ``.parquet`` and one ``notes.csv``.

Objects: ``dt=YYYY-MM-DD/hour=HH/part-NNNN.{jsonl.gz,jsonl,parquet}`` (1-3 per hour, HH the
UTC hour of the events inside). JSON lines are compact objects, absent fields omitted (never
``null``, except in the malformed ones). Parquet objects (zstd) hold valid events only, with
the wire fields except ``metadata`` and unknown fields: identifiers and ``timestamp`` as
strings (the same RFC 3339 text as in JSON), counts and ``attempt`` as int64, nulls where a
JSON line would omit the field. Gzip is written with mtime=0, so bytes are reproducible.

The manifest (see :func:`generation_manifest`) states exactly what was written, so a pipeline
test can compare its counts and token sums against it. A Parquet row counts as a line.
"""

from __future__ import annotations

import calendar
import functools
import gzip
import io
import re
import shutil
import tempfile
import weakref
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from contracts.usage_event import (
    MAX_COUNT,
    OBJECT_REASONS,
    STATUSES,
    WIRE_FIELDS,
)
from tools.generator import shapes as sh

# ---------------------------------------------------------------------------------------------
# Model of the world.

#: (provider, model) pairs the generator emits; every model is a key of the LiteLLM price table.
MODELS: tuple[tuple[str, str], ...] = (
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "o4-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("gcp.gemini", "gemini-2.5-pro"),
    ("gcp.gemini", "gemini-2.5-flash"),
    ("aws.bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("aws.bedrock", "anthropic.claude-haiku-4-5-20251001-v1:0"),
)
PROVIDERS = ("openai", "anthropic", "gcp.gemini", "aws.bedrock")
FEATURES = ("chat", "code-assist", "rag-search", "agent", "summarize")
PLANS = ("starter", "pro", "enterprise")
ENVIRONMENTS = ("production", "staging")
APPS = ("web", "mobile", "api", "batch")
N_CUSTOMERS = 40
#: The canonical counts the generator simulates. The contract's other (optional) subsets
#: come from producer shapes only (see shapes.ADDED_COUNTS).
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                "reasoning_tokens")  # fmt: skip
_WIRE = tuple(f for f in WIRE_FIELDS if f in TOKEN_FIELDS or not f.endswith("_tokens"))
#: Line-level reasons of canonical lines, then those only producer shapes have (mixed months).
CANONICAL_LINE_REASONS = (
    "invalid_json",
    "missing_required_field",
    "wrong_type",
    "negative_count",
    "count_out_of_range",
    "subset_invariant_broken",
    "unparseable_timestamp",
    "timestamp_outside_hour",
    "unknown_status",
)
LINE_REASONS = CANONICAL_LINE_REASONS + sh.SHAPE_REASONS

_AGENT = FEATURES.index("agent")
_MODEL_PROVIDER = np.array([PROVIDERS.index(p) for p, _ in MODELS])
_OPENAI, _ANTHROPIC, _GEMINI, _BEDROCK = range(4)

#: ln(tokens) ~ N(mu, sigma) per feature: (mu_in, sigma_in, mu_out, sigma_out). Chat, code and
#: RAG (long context) are the fits from the reference traces; summarize is invented. Agents:
#: input grows with the step of the run, output ~ input / 100.
WORKLOADS = {
    "chat": (6.63, 0.99, 5.02, 0.86),
    "code-assist": (7.00, 1.36, 2.79, 0.85),
    "rag-search": (8.74, 1.20, 5.34, 1.36),
    "agent": (7.90, 0.80, float(np.log(0.01)), 0.50),
    "summarize": (8.00, 1.00, 5.20, 0.70),
}
MAX_INPUT = 1_000_000
MAX_VISIBLE_OUTPUT = 32_768
MAX_OUTPUT = 65_536
AGENT_CALLS = (5, 60)  # calls per agent run, inclusive
AGENT_GAP_MS = (3_000.0, 0.7)  # log-normal median and sigma of the gap between calls

#: Relative weight of each model per feature (rows: FEATURES, columns: MODELS).
_MODEL_BASE = np.array(
    [
        [3.0, 4.0, 0.5, 2.0, 2.0, 0.5, 2.0, 1.0, 1.0],  # chat
        [2.0, 1.0, 2.0, 4.0, 1.0, 1.0, 0.5, 2.0, 0.5],  # code-assist
        [1.0, 3.0, 0.3, 1.0, 2.0, 2.0, 3.0, 0.5, 1.5],  # rag-search
        [1.0, 0.5, 2.0, 4.0, 1.0, 2.0, 0.5, 2.0, 0.3],  # agent
        [0.5, 4.0, 0.0, 0.5, 3.0, 0.3, 3.0, 0.2, 1.5],  # summarize
    ]
)
_FEATURE_ALPHA = np.array([3.0, 1.5, 1.5, 1.2, 0.8])

#: Prompt caching: probability of a cache hit per feature (agents: first call / later calls),
#: Beta(a, b) of the cached fraction of the input, minimum cacheable prompt.
_HIT_P = np.array([0.55, 0.45, 0.35, 0.0, 0.10])
_AGENT_HIT_P = (0.15, 0.65)
_CACHED_FRACTION = (3.0, 2.0)
_MIN_CACHEABLE = 1024
_WRITE_P = (0.45, 0.25)  # Anthropic-style cache write probability: without / with a hit

#: Reasoning per model: (reported, probability of thinking, mu, sigma of ln(reasoning/visible)).
#: Not reported -> null; reported but not thinking -> 0 (OpenAI) or null (Gemini omits it).
_REASONING = {
    "gpt-4o": (True, 0.0, 0.0, 0.0),
    "gpt-4o-mini": (True, 0.0, 0.0, 0.0),
    "o4-mini": (True, 1.0, float(np.log(2.5)), 0.6),
    "gemini-2.5-pro": (True, 1.0, float(np.log(1.2)), 0.7),
    "gemini-2.5-flash": (True, 0.5, float(np.log(0.8)), 0.7),
}

#: Per logical call: retried once, retried twice, failed without retry, cancelled stream.
RETRY_ONCE, RETRY_TWICE, FAIL_FINAL, CANCELLED = 0.025, 0.004, 0.006, 0.010
FAILED_BILLED_INPUT = 0.2  # share of failed attempts that still report (billed) input tokens
DUPLICATE_RATE = 0.007
MALFORMED_RATE = 0.003
#: Relative frequency of each line-level reason among malformed lines (each appears >= once).
_REASON_WEIGHTS = {
    "invalid_json": 2,
    "missing_required_field": 2,
    "wrong_type": 2,
    "negative_count": 1,
    "count_out_of_range": 1,
    "subset_invariant_broken": 2,
    "unparseable_timestamp": 1,
    "timestamp_outside_hour": 2,
    "unknown_status": 1,
}
#: Objects per hour (1-3) and their formats.
_OBJECTS_P = (0.55, 0.30, 0.15)
FORMATS = ("jsonl.gz", "jsonl", "parquet")
_FORMAT_P = (0.75, 0.15, 0.10)
_PARQUET = 2

_REGIONS = {  # (provider, eu) -> region; OpenAI and Anthropic direct report none
    (_GEMINI, False): "us-central1",
    (_GEMINI, True): "europe-west4",
    (_BEDROCK, False): "us-east-1",
    (_BEDROCK, True): "eu-central-1",
}
_OFFSETS_MIN = (120, -300, 330, 60, -240)

#: Hours are simulated one by one but rendered in chunks of at least this many rows (one
#: polars pass per chunk; an hour above WINDOW_ROWS rows is rendered alone, in windows).
CHUNK_ROWS = 16_384
GZIP_LEVEL = 6

_HOUR_MS = 3_600_000
_MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class GeneratedObject:
    """One object: its ``key`` (relative to the prefix, e.g.
    ``dt=2026-10-05/hour=07/part-0000.jsonl.gz``) and its body, in memory or, for a large
    object (above ``SPOOL_BYTES``, e.g. a hot hour), in a file (``spool``): ``body`` reads
    it, ``open()`` streams it, ``save()`` copies it.

    A spool file the generator wrote (``owned``) lives as long as the object: it is removed
    once the object is collected. It belongs to the process holding the object: pickling it
    (a rendering process returning it) hands the file over to the unpickled copy.
    """

    __slots__ = ("key", "_body", "spool", "owned", "_finalizer", "__weakref__")

    def __init__(
        self,
        key: str,
        body: bytes | None = None,
        *,
        spool: Path | None = None,
        owned: bool = True,
    ):
        if (body is None) == (spool is None):
            raise ValueError("give a body or a spool file, not both")
        self.key, self._body, self.spool, self.owned = key, body, spool, owned
        self._own()

    def _own(self) -> None:
        owns = self.spool is not None and self.owned
        self._finalizer = weakref.finalize(self, _unlink, self.spool) if owns else None

    @property
    def body(self) -> bytes:
        return self._body if self.spool is None else self.spool.read_bytes()

    @property
    def size(self) -> int:
        return len(self._body) if self.spool is None else self.spool.stat().st_size

    def open(self) -> BinaryIO:
        return io.BytesIO(self._body) if self.spool is None else self.spool.open("rb")

    def save(self, path: Path) -> None:
        """Write the body to ``path`` (a spool file is copied, never read into memory)."""
        if self.spool is None:
            path.write_bytes(self._body)
        else:
            shutil.copyfile(self.spool, path)

    def __getstate__(self) -> tuple:
        if self._finalizer is not None:
            self._finalizer.detach()  # the unpickled copy owns the file now
        return self.key, self._body, self.spool, self.owned

    def __setstate__(self, state: tuple) -> None:
        self.key, self._body, self.spool, self.owned = state
        self._own()

    def __repr__(self) -> str:
        where = f"spool={str(self.spool)!r}" if self.spool else f"{len(self._body):,} bytes"
        return f"GeneratedObject({self.key!r}, {where})"


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Deterministic randomness and identifiers.


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection on uint64 (so distinct counters give distinct ids)."""
    x = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SHIFTS = np.arange(60, -1, -4, dtype=np.uint64)


def _hex16(x: np.ndarray) -> pl.Series:
    nibbles = ((x[:, None] >> _SHIFTS) & np.uint64(15)).astype(np.intp)
    chars = np.ascontiguousarray(_HEX[nibbles])
    return pl.Series(chars.view("S16").ravel()).cast(pl.String)


class _Ids:
    """Identifier streams: ``prefix + hex(mix(counter ^ key))``, one key per stream and seed."""

    EVENT, REQUEST, TRACE_A, TRACE_B, SUB, SHAPE_A, SHAPE_B = 1, 2, 3, 4, 5, 6, 7

    def __init__(self, seed: int):
        self.keys = {s: _mix64(np.array([seed * 16 + s], dtype=np.uint64))[0] for s in range(1, 8)}

    def hex(self, stream: int, counters: np.ndarray) -> pl.Series:
        return _hex16(_mix64(counters.astype(np.uint64) ^ self.keys[stream]))


def _counters(month_ord: int, hour: int, idx: np.ndarray) -> np.ndarray:
    """Unique per (month, hour, idx < 2**32): month in bits 42-63, hour in 32-41."""
    base = (np.uint64(month_ord) << np.uint64(42)) | (np.uint64(hour) << np.uint64(32))
    return base | idx.astype(np.uint64)


# ---------------------------------------------------------------------------------------------
# Customers (depend on the seed only).


@dataclass(frozen=True)
class _Customers:
    ids: pl.Series
    subscription_ids: pl.Series
    plans: pl.Series
    weights: np.ndarray
    unit_feature_cdf: np.ndarray  # (C, F): cdf of the feature of a unit (call or agent run)
    model_cdf: np.ndarray  # (C, F, M)
    staging_share: np.ndarray
    eu: np.ndarray
    counts_as_strings: np.ndarray
    omit_defaults: np.ndarray
    marks_retried: np.ndarray
    ts_style: np.ndarray  # 0: Z with ms, 1: Z without ms, 2: local offset with ms
    offset_min: np.ndarray
    offset_suffix: pl.Series  # "Z" or "+02:00"
    sdk_version: pl.Series  # null unless the producer sends the unknown field
    app_version: pl.Series  # null unless the producer sends metadata


def _customers(seed: int) -> _Customers:
    rng = _rng(seed, 0xC057)
    n, f = N_CUSTOMERS, len(FEATURES)
    rank = rng.permutation(n)  # size rank: 0 is the biggest whale
    weights = 1.0 / (rank + 1.0) ** 1.1
    weights /= weights.sum()
    plan = np.where(rank < 6, 2, np.where(rank < 18, 1, 0))

    mix = rng.dirichlet(_FEATURE_ALPHA, n) * (rng.random((n, f)) < 0.75)
    mix[mix.sum(axis=1) == 0, 0] = 1.0
    mean_calls = np.ones(f)
    mean_calls[_AGENT] = (AGENT_CALLS[0] + AGENT_CALLS[1]) / 2
    unit = mix / mean_calls  # a feature's share of rows -> its share of units
    unit_cdf = np.cumsum(unit / unit.sum(axis=1, keepdims=True), axis=1)

    affinity = rng.gamma(0.7, size=(n, len(PROVIDERS))) * (rng.random((n, len(PROVIDERS))) < 0.6)
    none = affinity.sum(axis=1) == 0
    affinity[none, rng.integers(0, len(PROVIDERS), none.sum())] = 1.0
    w = _MODEL_BASE[None, :, :] * affinity[:, _MODEL_PROVIDER][:, None, :]  # (C, F, M)
    empty = w.sum(axis=2) == 0
    w[empty] = _MODEL_BASE[np.nonzero(empty)[1]]
    model_cdf = np.cumsum(w / w.sum(axis=2, keepdims=True), axis=2)

    style_perm = rng.permutation(n)
    counts_as_strings = np.isin(np.arange(n), style_perm[0:4])
    ts_style = np.zeros(n, dtype=np.int64)
    offset_min = np.zeros(n, dtype=np.int64)
    offset_min[style_perm[4:9]] = _OFFSETS_MIN
    ts_style[style_perm[4:9]] = 2
    ts_style[style_perm[9:12]] = 1
    sdk = [None] * n
    for i, c in enumerate(style_perm[12:15]):
        sdk[c] = f"tokenbill-sdk/{1 + i}.{rng.integers(0, 10)}.{rng.integers(0, 20)}"
    suffix = [
        "Z" if o == 0 else f"{'+' if o > 0 else '-'}{abs(o) // 60:02d}:{abs(o) % 60:02d}"
        for o in offset_min
    ]
    sends_metadata = rng.random(n) < 0.5
    app_version = [
        f"{rng.integers(1, 5)}.{rng.integers(0, 30)}.{rng.integers(0, 10)}" if s else None
        for s in sends_metadata
    ]
    ids = _Ids(seed)
    return _Customers(
        ids=pl.Series([f"cus_{i + 1:04d}" for i in range(n)]),
        subscription_ids="sub_" + ids.hex(_Ids.SUB, np.arange(n)).str.slice(0, 12),
        plans=pl.Series(PLANS).gather(plan),
        weights=weights,
        unit_feature_cdf=unit_cdf,
        model_cdf=model_cdf,
        staging_share=np.where(rng.random(n) < 0.4, rng.uniform(0.02, 0.15, n), 0.0),
        eu=rng.random(n) < 0.3,
        counts_as_strings=counts_as_strings,
        omit_defaults=rng.random(n) < 0.3,
        marks_retried=rng.random(n) < 0.25,
        ts_style=ts_style,
        offset_min=offset_min,
        offset_suffix=pl.Series(suffix),
        sdk_version=pl.Series(sdk, dtype=pl.String),
        app_version=pl.Series(app_version, dtype=pl.String),
    )


def _sample_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise inverse-cdf sampling: cdf (n, k), u (n,) -> index in [0, k)."""
    return np.minimum((u[:, None] >= cdf).sum(axis=1), cdf.shape[1] - 1)


# ---------------------------------------------------------------------------------------------
# The month plan: events per hour, malformed lines per hour, special objects.


@dataclass(frozen=True)
class _MonthPlan:
    month: str
    events: int
    seed: int
    year: int
    mon: int
    hours: int
    start_ms: int
    month_ord: int
    n_valid: np.ndarray  # valid unique events per hour
    bad_reasons: list[np.ndarray]  # reason indices (into LINE_REASONS) of malformed lines
    specials: dict[int, list[tuple[str, str, bytes]]]  # hour -> [(suffix, reason, body)]
    shapes: str = "mixed"  # "mixed": re-shape attempts on the wire; "canonical": never
    hot: frozenset[int] = frozenset()  # hot hours: one .jsonl.gz object each


def _parse_month(month: str) -> tuple[int, int]:
    match = _MONTH_RE.match(month)
    if not match:
        raise ValueError(f"month must look like 2026-10, got {month!r}")
    return int(match.group(1)), int(match.group(2))


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    quota = weights / weights.sum() * total
    out = np.floor(quota).astype(np.int64)
    rest = total - int(out.sum())
    if rest:
        out[np.argsort(-(quota - out), kind="stable")[:rest]] += 1
    return out


SHAPE_MODES = ("mixed", "canonical")


def _plan_month(
    month: str,
    events: int,
    seed: int,
    shapes: str = "mixed",
    hot_hours: int = 0,
    hot_hour_events: int = 0,
) -> _MonthPlan:
    if shapes not in SHAPE_MODES:
        raise ValueError(f"shapes must be one of {', '.join(SHAPE_MODES)}, got {shapes!r}")
    if events < 0:
        raise ValueError("events must be >= 0")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    year, mon = _parse_month(month)
    days = calendar.monthrange(year, mon)[1]
    hours = days * 24
    rng = _rng(seed, year, mon, 0x1707)

    hod = np.arange(hours) % 24
    weekday = np.repeat([calendar.weekday(year, mon, d + 1) for d in range(days)], 24)
    w = (
        0.25
        + np.exp(-0.5 * ((hod - 14.5) / 3.5) ** 2)  # Europe + US east business hours
        + 0.4 * np.exp(-0.5 * ((hod - 20.0) / 2.5) ** 2)  # US west afternoon
    )
    w *= np.where(weekday >= 5, 0.4, 1.0)
    w *= 1.0 + 0.15 * np.arange(hours) / hours  # growth over the month
    w *= rng.lognormal(0.0, 0.12, hours)
    n_valid = _largest_remainder(w, events)
    hot = _hot_hours(seed, year, mon, w, events, hot_hours, hot_hour_events)
    if hot:
        cold = np.ones(hours, dtype=bool)
        cold[hot] = False
        n_valid = np.zeros(hours, dtype=np.int64)
        n_valid[hot] = hot_hour_events
        n_valid[cold] = _largest_remainder(w[cold], events - len(hot) * hot_hour_events)

    n_reasons = len(CANONICAL_LINE_REASONS)
    n_bad = max(n_reasons, round(events * MALFORMED_RATE))
    extra = _largest_remainder(
        np.array([_REASON_WEIGHTS[r] for r in CANONICAL_LINE_REASONS], dtype=float),
        n_bad - n_reasons,
    )
    reasons = np.repeat(np.arange(n_reasons), extra + 1)
    bad_hour = rng.choice(hours, size=n_bad, p=w / w.sum())
    order = np.argsort(bad_hour, kind="stable")
    bounds = np.searchsorted(bad_hour[order], np.arange(hours + 1))
    bad_reasons = [reasons[order[bounds[h] : bounds[h + 1]]] for h in range(hours)]
    if shapes == "mixed":  # a few lines of each shape-only reason, on a stream of their own
        srng = _rng(seed, year, mon, 0x1708)
        each = max(2, round(events * sh.SHAPE_BAD_RATE))
        codes = np.repeat(np.arange(n_reasons, len(LINE_REASONS)), each)
        at = srng.choice(hours, size=len(codes), p=w / w.sum())
        for h in np.unique(at):
            bad_reasons[h] = np.concatenate([bad_reasons[h], codes[at == h]])

    special_hours = rng.choice(hours, size=3, replace=False, p=w / w.sum())
    garbage = rng.integers(0, 256, size=3000, dtype=np.uint8)
    garbage[::97] = 0xFF  # never valid UTF-8
    gz = b"\x50\xff" + garbage[:1400].tobytes()  # no gzip magic (1f 8b)
    parquet = b"PAR1" + garbage[1400:].tobytes()  # magic, then garbage and no footer
    csv = (
        b"event_id,customer_id,model,input_tokens,output_tokens\n"
        b"evt_manual_0001,cus_0001,gpt-4o,1200,300\n"
    )
    specials: dict[int, list[tuple[str, str, bytes]]] = {}
    for h, item in zip(
        special_hours.tolist(),
        [
            (".jsonl.gz", "unreadable_object", gz),
            (".parquet", "unreadable_object", parquet),
            ("notes.csv", "unsupported_format", csv),
        ],
        strict=True,
    ):
        specials.setdefault(h, []).append(item)

    return _MonthPlan(
        month=month,
        events=events,
        seed=seed,
        year=year,
        mon=mon,
        hours=hours,
        start_ms=calendar.timegm((year, mon, 1, 0, 0, 0)) * 1000,
        month_ord=year * 12 + mon - 1,
        n_valid=n_valid,
        bad_reasons=bad_reasons,
        specials=specials,
        shapes=shapes,
        hot=frozenset(hot),
    )


def _hot_hours(
    seed: int, year: int, mon: int, w: np.ndarray, events: int, n: int, each: int
) -> list[int]:
    """The month's hot hours (on a stream of their own: without them a month is unchanged)."""
    if n < 0 or each < 0:
        raise ValueError("hot_hours and hot_hour_events must be >= 0")
    if n == 0:
        return []
    if n > len(w):
        raise ValueError(f"hot_hours {n} exceeds the {len(w)} hours of the month")
    if n * each > events:
        raise ValueError(
            f"hot hours hold {n} x {each:,} = {n * each:,} events, more than the month's "
            f"{events:,}: raise --events or lower --hot-hour-events"
        )
    rng = _rng(seed, year, mon, 0x1709)
    return sorted(rng.choice(len(w), size=n, replace=False, p=w / w.sum()).tolist())


# ---------------------------------------------------------------------------------------------
# One hour: simulate attempts, pick malformed lines, duplicates and objects.


@dataclass
class _HourPlan:
    hour: int
    rows: dict[str, np.ndarray]  # one entry per line-producing attempt (valid + malformed)
    bad_reason: np.ndarray  # -1 for valid rows, else index into LINE_REASONS
    bad_variant: np.ndarray
    obj: np.ndarray  # object index per row
    dup_src: np.ndarray  # row index of each duplicate's original
    dup_obj: np.ndarray
    dup_delay: np.ndarray
    formats: list[int] = field(default_factory=list)  # per object, index into FORMATS
    otlp_batches: int = 0  # OTLP lines of the hour (each holds one batch of spans)
    #: Per-row id counters when this plan holds some rows of its hour only (see
    #: _window_plan); None: every row, counters from bad_reason (_row_counters).
    counters: np.ndarray | None = None


def _draw_units(c: _Customers, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    cust = rng.choice(N_CUSTOMERS, size=n, p=c.weights)
    feat = _sample_cdf(c.unit_feature_cdf[cust], rng.random(n))
    model = _sample_cdf(c.model_cdf[cust, feat], rng.random(n))
    calls = np.where(feat == _AGENT, rng.integers(AGENT_CALLS[0], AGENT_CALLS[1] + 1, n), 1)
    staging = rng.random(n) < c.staging_share[cust]
    app = rng.integers(0, len(APPS), n)
    start_u = rng.random(n)
    # Attempts of each call and the final status of the call.
    u = rng.random(int(calls.sum()))
    edges = np.cumsum([RETRY_ONCE, RETRY_TWICE, FAIL_FINAL, CANCELLED])
    kind = np.searchsorted(edges, u, side="right")  # 0 retry once, 1 twice, 2 fail, 3 cancel
    n_att = np.choose(np.minimum(kind, 4), [2, 3, 1, 1, 1])
    final = np.choose(np.minimum(kind, 4), [0, 0, 1, 3, 0])  # index into STATUSES
    return {
        "cust": cust,
        "feat": feat,
        "model": model,
        "calls": calls,
        "staging": staging,
        "app": app,
        "start_u": start_u,
        "n_att": n_att,
        "final": final,
    }


def _simulate_attempts(c: _Customers, n_rows: int, rng: np.random.Generator) -> dict:
    """Exactly ``n_rows`` attempts (rows) of whole units, the last unit possibly cut short."""
    batches, have = [], 0
    while have < n_rows:
        units = _draw_units(c, max(16, (n_rows - have) // 3 + 16), rng)
        batches.append(units)
        have += int(units["n_att"].sum())
    u = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    n_units, n_calls = len(u["cust"]), len(u["n_att"])

    # Calls.
    call_unit = np.repeat(np.arange(n_units), u["calls"])
    first_call = np.cumsum(u["calls"]) - u["calls"]
    step = np.arange(n_calls) - first_call[call_unit]
    gap = rng.lognormal(np.log(AGENT_GAP_MS[0]), AGENT_GAP_MS[1], n_calls)
    gap_cs = np.cumsum(gap)
    call_offset = gap_cs - gap_cs[first_call[call_unit]]
    backoff = rng.uniform(500.0, 8_000.0, n_calls)
    feat, model = u["feat"][call_unit], u["model"][call_unit]
    prov = _MODEL_PROVIDER[model]

    mu_in, sd_in, mu_out, sd_out = (np.array([WORKLOADS[f][i] for f in FEATURES]) for i in range(4))
    z_in, z_out, z_r = rng.standard_normal((3, n_calls))
    ln_in = mu_in[feat] + sd_in[feat] * z_in + np.where(feat == _AGENT, np.log1p(0.05 * step), 0)
    inp = np.clip(np.rint(np.exp(ln_in)), 1, MAX_INPUT).astype(np.int64)
    ln_out = np.where(feat == _AGENT, np.log(inp), 0.0) + mu_out[feat] + sd_out[feat] * z_out
    visible = np.clip(np.rint(np.exp(ln_out)), 1, MAX_VISIBLE_OUTPUT).astype(np.int64)

    names = [name for _, name in MODELS]
    r_reported = np.array([_REASONING.get(n, (False, 0, 0, 0))[0] for n in names])
    r_p, r_mu, r_sd = (
        np.array([_REASONING.get(n, (False, 0, 0, 0))[i] for n in names]) for i in (1, 2, 3)
    )
    thinks = rng.random(n_calls) < r_p[model]
    reasoning = np.where(thinks, np.rint(visible * np.exp(r_mu[model] + r_sd[model] * z_r)), 0)
    out = np.minimum(visible + reasoning.astype(np.int64), MAX_OUTPUT)
    reasoning = out - visible
    reasoning_null = ~r_reported[model] | ((prov == _GEMINI) & ~thinks)

    hit_p = np.where(feat == _AGENT, np.where(step == 0, *_AGENT_HIT_P), _HIT_P[feat])
    cacheable = inp >= _MIN_CACHEABLE
    hit = (rng.random(n_calls) < hit_p) & cacheable
    cached = np.floor(inp * rng.beta(*_CACHED_FRACTION, n_calls)).astype(np.int64) * hit
    cached = np.where(prov == _OPENAI, cached // 128 * 128, cached)
    writes_cache = (prov == _ANTHROPIC) | (prov == _BEDROCK)
    write = (rng.random(n_calls) < np.where(hit, _WRITE_P[1], _WRITE_P[0])) & cacheable
    cache_write = np.floor((inp - cached) * rng.uniform(0.3, 0.9, n_calls)).astype(np.int64) * (
        write & writes_cache
    )
    cached_null = (prov == _GEMINI) & (cached == 0)
    cache_write_null = ~writes_cache

    # Rows (attempts), cut to exactly n_rows.
    row_call = np.repeat(np.arange(n_calls), u["n_att"])[:n_rows]
    first_row = (np.cumsum(u["n_att"]) - u["n_att"])[row_call]
    attempt = np.arange(len(row_call)) - first_row + 1
    n_att = u["n_att"][row_call]
    row_unit = call_unit[row_call]
    cust = u["cust"][row_unit]
    last = attempt == n_att
    retried_status = np.where(c.marks_retried[cust], 2, 1)
    status = np.where(last, u["final"][row_call], retried_status)

    # Timestamps: unit start + call offset + retry backoff, kept inside the hour.
    offset = call_offset[row_call] + (attempt - 1) * backoff[row_call]
    last_call = first_call + u["calls"] - 1
    span = call_offset[last_call] + 2 * 8_000.0
    scale = np.minimum(1.0, (_HOUR_MS - 1) / (span + 1.0))
    start = u["start_u"] * np.maximum(0.0, _HOUR_MS - 1 - span * scale)
    ts = np.clip(np.floor(start[row_unit] + offset * scale[row_unit]), 0, _HOUR_MS - 1)

    rows = {
        "ts": ts.astype(np.int64),
        "cust": cust,
        "feat": feat[row_call],
        "model": model[row_call],
        "prov": prov[row_call],
        "staging": u["staging"][row_unit],
        "app": u["app"][row_unit],
        "status": status,
        "attempt": attempt,
        "n_att": n_att,
        "call": row_call,
        "unit": row_unit,
        "agent": feat[row_call] == _AGENT,
        "input_tokens": inp[row_call],
        "cached_input_tokens": cached[row_call],
        "cache_write_tokens": cache_write[row_call],
        "output_tokens": out[row_call],
        "reasoning_tokens": reasoning[row_call],
        "cached_input_tokens_null": cached_null[row_call],
        "cache_write_tokens_null": cache_write_null[row_call],
        "reasoning_tokens_null": reasoning_null[row_call],
    }
    n = len(row_call)
    failed = (status == 1) | (status == 2)
    zero = failed & (rng.random(n) >= FAILED_BILLED_INPUT)
    for name in ("input_tokens", "cached_input_tokens", "cache_write_tokens"):
        rows[name] = np.where(zero, 0, rows[name])
    rows["output_tokens"] = np.where(failed, 0, rows["output_tokens"])
    cancelled = status == 3
    partial = np.floor(rows["output_tokens"] * rng.uniform(0.05, 0.8, n)).astype(np.int64)
    rows["output_tokens"] = np.where(cancelled, partial, rows["output_tokens"])
    rows["reasoning_tokens"] = np.minimum(rows["reasoning_tokens"], rows["output_tokens"])
    return rows


def _plan_hour(c: _Customers, mp: _MonthPlan, hour: int) -> _HourPlan | None:
    n_valid = int(mp.n_valid[hour])
    reasons = mp.bad_reasons[hour]
    n_bad = len(reasons)
    if n_valid + n_bad == 0:
        return None
    rng = _rng(mp.seed, mp.year, mp.mon, 0x4000 + hour)
    rows = _simulate_attempts(c, n_valid + n_bad, rng)
    n = n_valid + n_bad

    bad_reason = np.full(n, -1, dtype=np.int64)
    bad_rows = np.sort(rng.choice(n, size=n_bad, replace=False))
    bad_reason[bad_rows] = rng.permutation(reasons)
    n_variants = np.array([len(_VARIANTS.get(r, [{}])) for r in LINE_REASONS])
    bad_variant = np.zeros(n, dtype=np.int64)
    bad_variant[bad_rows] = np.floor(rng.random(n_bad) * n_variants[bad_reason[bad_rows]]).astype(
        np.int64
    )
    valid_rows = np.flatnonzero(bad_reason < 0)

    k = int(rng.choice(len(_OBJECTS_P), p=_OBJECTS_P)) + 1
    formats = rng.choice(len(FORMATS), size=k, p=_FORMAT_P)
    if hour in mp.hot:  # a hot hour is one (large) gzip JSON-lines object
        k, formats = 1, np.zeros(1, dtype=np.int64)
    if n_bad and (formats == _PARQUET).all():
        formats[0] = 0
    obj = rng.integers(0, k, n)
    jsonl_objs = np.flatnonzero(formats != _PARQUET)
    if n_bad:
        obj[bad_rows] = jsonl_objs[rng.integers(0, len(jsonl_objs), n_bad)]

    n_dup = int(rng.binomial(n_valid, DUPLICATE_RATE))
    dup_src = np.sort(rng.choice(valid_rows, size=n_dup, replace=False))
    dup_obj = np.empty(n_dup, dtype=np.int64)
    pick = rng.random(n_dup)
    src_parquet = formats[obj[dup_src]] == _PARQUET
    for is_parquet in (False, True):
        family = np.flatnonzero((formats == _PARQUET) == is_parquet)
        sel = src_parquet == is_parquet
        if sel.any():
            dup_obj[sel] = family[np.floor(pick[sel] * len(family)).astype(np.int64)]
    dup_delay = rng.integers(1_000, 600_000, n_dup)

    used = np.unique(np.concatenate([obj, dup_obj]))  # drop objects that got no line
    remap = np.full(k, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    otlp_batches = _assign_shapes(mp, hour, rows, bad_reason, formats[obj], remap[obj], dup_src)
    return _HourPlan(
        hour=hour,
        rows=rows,
        bad_reason=bad_reason,
        bad_variant=bad_variant,
        obj=remap[obj],
        dup_src=dup_src,
        dup_obj=remap[dup_obj],
        dup_delay=dup_delay,
        formats=[int(formats[i]) for i in used],
        otlp_batches=otlp_batches,
    )


def _assign_shapes(
    mp: _MonthPlan,
    hour: int,
    rows: dict[str, np.ndarray],
    bad_reason: np.ndarray,
    row_format: np.ndarray,
    obj: np.ndarray,
    dup_src: np.ndarray,
) -> int:
    """Add each attempt's wire shape to ``rows`` (see ``shapes.assign``) and its OTLP batch
    (``otlp_batch``: -1, or the hour's OTLP line holding its span). Returns the OTLP lines.

    Drawn on an hour stream of its own, after everything else: a canonical month is the same
    month without this step, byte for byte. Parquet rows stay canonical; a resent attempt is
    in a one-line shape (a resend is the same line again)."""
    n = len(bad_reason)
    if mp.shapes == "canonical":
        rows["shape"] = np.zeros(n, dtype=np.int64)
        rows["ce_inner"] = np.full(n, -1, dtype=np.int64)
        rows["shape_u"] = np.zeros(n)
        rows |= {name: np.zeros(n, dtype=np.int64) for name in sh.ADDED_COUNTS}
        rows["otlp_batch"] = np.full(n, -1, dtype=np.int64)
        return 0
    rng = _rng(mp.seed, mp.year, mp.mon, 0x5000 + hour)
    one_line = np.zeros(n, dtype=bool)
    one_line[dup_src] = True
    rows |= sh.assign(rows, bad_reason, LINE_REASONS, row_format == _PARQUET, one_line, rng)
    # OTLP batches: the spans of one object, customer, app and environment, in time order,
    # at most OTLP_BATCH per line.
    batch = np.full(n, -1, dtype=np.int64)
    idx = np.flatnonzero(rows["shape"] == sh.S[sh.OTLP])
    if len(idx):
        keys = (
            rows["ts"][idx],
            rows["staging"][idx],
            rows["app"][idx],
            rows["cust"][idx],
            obj[idx],
        )
        order = idx[np.lexsort(keys)]
        group = np.stack([obj[order], rows["cust"][order], rows["app"][order],
                          rows["staging"][order]], axis=1)  # fmt: skip
        new = np.ones(len(order), dtype=bool)
        new[1:] = (group[1:] != group[:-1]).any(axis=1)
        group_id = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        rank = np.arange(len(order)) - starts[group_id]
        _, dense = np.unique(group_id * (n + 1) + rank // sh.OTLP_BATCH, return_inverse=True)
        batch[order] = dense
    rows["otlp_batch"] = batch
    return int(batch.max(initial=-1)) + 1


# ---------------------------------------------------------------------------------------------
# Rendering: wire values, JSON lines with one malformation each, Parquet rows.


def _q(expr: pl.Expr) -> pl.Expr:
    return pl.concat_str([pl.lit('"'), expr, pl.lit('"')])


def _int_raw(name: str) -> pl.Expr:
    text = pl.col(name).cast(pl.String)
    return pl.when(pl.col("_strings")).then(_q(text)).otherwise(text)


def _ts_text(ms: pl.Expr, with_ms: pl.Expr, suffix: pl.Expr) -> pl.Expr:
    base = pl.from_epoch(ms, time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = pl.concat_str([pl.lit("."), (ms % 1000).cast(pl.String).str.zfill(3)])
    return pl.concat_str([base, pl.when(with_ms).then(frac).otherwise(pl.lit("")), suffix])


_TS_UTC = pl.col("_ts_ms")
_Z = pl.lit("Z")
#: reason -> list of variants; each variant maps a field to its raw JSON text (None: absent).
#: Every variant triggers exactly one reason of contracts.usage_event (checked in the tests).
_VARIANTS: dict[str, list[dict[str, pl.Expr | None]]] = {
    # The line is cut in half (a proper prefix of an object is never valid JSON).
    "invalid_json": [{}],
    "missing_required_field": [
        {"customer_id": None},
        {"model": pl.lit('""')},
        {"input_tokens": pl.lit("null")},
        {"timestamp": pl.lit('""')},
        {"output_tokens": None},
    ],
    "wrong_type": [
        {"output_tokens": _q(pl.col("output_tokens").cast(pl.String) + ".5")},
        {
            "model": pl.concat_str(
                [pl.lit('{"name":"'), pl.col("model"), pl.lit('","version":"latest"}')]
            )
        },
        {"metadata": pl.lit('"app=web"')},
        {"input_tokens": _q(pl.col("input_tokens").cast(pl.String) + " tokens")},
    ],
    "negative_count": [
        {
            "cached_input_tokens": (-(pl.col("cached_input_tokens").fill_null(0) + 1)).cast(
                pl.String
            )
        },
        {"attempt": pl.lit("-1")},
        {
            "output_tokens": (-(pl.col("output_tokens") + 1)).cast(pl.String),
            "reasoning_tokens": None,
        },
    ],
    "count_out_of_range": [
        {"input_tokens": (pl.col("input_tokens") + 4_294_967_296).cast(pl.String)},
        {"attempt": pl.lit("0")},
        {"output_tokens": (pl.col("output_tokens") + MAX_COUNT).cast(pl.String)},
    ],
    "subset_invariant_broken": [
        # Anthropic's exclusive input_tokens sent as if inclusive.
        {
            "input_tokens": pl.col("_excl_in").cast(pl.String),
            "cached_input_tokens": (
                pl.col("_excl_in") + pl.max_horizontal(pl.col("cached_input_tokens"), 1)
            ).cast(pl.String),
        },
        # Gemini's candidatesTokenCount (excluding thoughts) sent as output_tokens.
        {
            "reasoning_tokens": (
                pl.col("output_tokens") + pl.max_horizontal(pl.col("reasoning_tokens"), 1)
            ).cast(pl.String)
        },
    ],
    "unparseable_timestamp": [
        {"timestamp": _q(pl.from_epoch(_TS_UTC, time_unit="ms").dt.strftime("%Y-%m-%d %H:%M:%S"))},
        {"timestamp": _TS_UTC.cast(pl.String)},
        {"timestamp": _q(pl.from_epoch(_TS_UTC, time_unit="ms").dt.strftime("%d/%m/%Y %H:%M:%S"))},
    ],
    "timestamp_outside_hour": [
        {"timestamp": _q(_ts_text(_TS_UTC - _HOUR_MS, pl.lit(True), _Z))},
        {"timestamp": _q(_ts_text(_TS_UTC + _HOUR_MS, pl.lit(True), _Z))},
    ],
    "unknown_status": [
        {"status": pl.lit('"error"')},
        {"status": pl.lit('"timeout"')},
        {"status": pl.lit('"SUCCESS"')},
        {"status": pl.lit('"ok"')},
    ],
}
_JSON_FIELDS = (
    *(f for f in _WIRE if f not in TOKEN_FIELDS and f != "metadata"),
    *TOKEN_FIELDS,
    "metadata",
    "sdk_version",
)
_STRING_FIELDS = tuple(
    f for f in _JSON_FIELDS if f not in TOKEN_FIELDS and f not in ("attempt", "metadata")
)
_PARQUET_FIELDS = tuple(f for f in _JSON_FIELDS if f not in ("metadata", "sdk_version"))


def _wire_frame(c: _Customers, mp: _MonthPlan, hps: list[_HourPlan], ids: _Ids) -> pl.DataFrame:
    """Every row of some hours with its wire values (strings and Int64; null = absent)."""
    r = {k: np.concatenate([hp.rows[k] for hp in hps]) for k in hps[0].rows}
    bad_reason = np.concatenate([hp.bad_reason for hp in hps])
    hour = np.concatenate([np.full(len(hp.bad_reason), hp.hour, dtype=np.int64) for hp in hps])
    idx = np.concatenate(
        [_row_counters(hp.bad_reason) if hp.counters is None else hp.counters for hp in hps]
    )
    hp_pos = np.concatenate(
        [np.full(len(hp.bad_reason), i, dtype=np.int64) for i, hp in enumerate(hps)]
    )
    cust = r["cust"]
    omit = c.omit_defaults[cust]
    ts_ms = mp.start_ms + hour * _HOUR_MS + r["ts"]
    trace_counter = _counters(mp.month_ord, hour, r["unit"])
    cust_s = pl.Series(cust)
    df = pl.DataFrame(
        {
            "event_id": "evt_" + ids.hex(_Ids.EVENT, _counters(mp.month_ord, hour, idx)),
            "_ts_ms": ts_ms,
            "_local_ms": ts_ms + c.offset_min[cust] * 60_000,
            "_with_ms": c.ts_style[cust] != 1,
            "_suffix": c.offset_suffix.gather(cust_s),
            "customer_id": c.ids.gather(cust_s),
            "subscription_id": c.subscription_ids.gather(cust_s),
            "plan": c.plans.gather(cust_s),
            "feature": _SERIES["feature"].gather(r["feat"]),
            "provider": _SERIES["provider"].gather(r["prov"]),
            "model": _SERIES["model"].gather(r["model"]),
            "environment": _SERIES["environment"].gather(r["staging"].astype(np.int64)),
            "region": _SERIES["region"].gather(r["prov"] * 2 + c.eu[cust]),
            "status": _SERIES["status"].gather(r["status"]),
            "_status_null": omit & (r["status"] == 0),
            "attempt": r["attempt"],
            "_attempt_null": omit & (r["attempt"] == 1),
            "request_group_id": "req_"
            + ids.hex(_Ids.REQUEST, _counters(mp.month_ord, hour, r["call"])),
            "_group_null": omit & (r["n_att"] == 1),
            "trace_id": ids.hex(_Ids.TRACE_A, trace_counter) + ids.hex(_Ids.TRACE_B, trace_counter),
            "_agent": r["agent"],
            **{f: r[f] for f in TOKEN_FIELDS},
            **{f"_{f}_null": r[f"{f}_null"] for f in _NULLABLE_COUNTS},
            "_app": _SERIES["app"].gather(r["app"]),
            "_app_version": c.app_version.gather(cust_s),
            "sdk_version": c.sdk_version.gather(cust_s),
            "_strings": c.counts_as_strings[cust],
            "_reason": bad_reason,
            "_variant": np.concatenate([hp.bad_variant for hp in hps]),
            "_hp": hp_pos,
            "_obj": np.concatenate([hp.obj for hp in hps]),
            "_shape": r["shape"],
            "_shape_u": r["shape_u"],
            "_ce_inner": r["ce_inner"],
            "_no_usage": np.zeros(len(cust), dtype=bool),
            **{f: r[f] for f in sh.ADDED_COUNTS},
            "_otlp_batch": r["otlp_batch"],
            "_h1": ids.hex(_Ids.SHAPE_A, _counters(mp.month_ord, hour, idx)),
            "_h2": ids.hex(_Ids.SHAPE_B, _counters(mp.month_ord, hour, idx)),
            "_latency_ms": 200 + np.floor(r["shape_u"] * 1e7 % 1.0 * 20_000).astype(np.int64),
            "_customer_on_span": cust % 10 >= 7,
        }
    )
    return df.with_columns(_wire_exprs())


def _row_counters(bad_reason: np.ndarray) -> np.ndarray:
    """Per-hour id counter of each row: valid rows 0.., malformed rows 2**31.. (disjoint)."""
    is_bad = bad_reason >= 0
    idx = np.empty(len(bad_reason), dtype=np.int64)
    idx[~is_bad] = np.arange(int((~is_bad).sum()))
    idx[is_bad] = (1 << 31) | np.arange(int(is_bad.sum()))
    return idx


_NULLABLE_COUNTS = ("cached_input_tokens", "cache_write_tokens", "reasoning_tokens")
_SERIES = {
    "feature": pl.Series(FEATURES),
    "provider": pl.Series(PROVIDERS),
    "model": pl.Series([m for _, m in MODELS]),
    "environment": pl.Series(ENVIRONMENTS),
    "region": pl.Series(
        [_REGIONS.get((p, eu)) for p in range(len(PROVIDERS)) for eu in (False, True)],
        dtype=pl.String,
    ),
    "status": pl.Series(STATUSES),
    "app": pl.Series(APPS),
}


@functools.cache
def _wire_exprs() -> list[pl.Expr]:
    null_if = {
        "status": "_status_null",
        "attempt": "_attempt_null",
        "request_group_id": "_group_null",
        **{f: f"_{f}_null" for f in _NULLABLE_COUNTS},
    }
    metadata = pl.concat_str(
        [
            pl.lit('{"app":"'),
            pl.col("_app"),
            pl.lit('","app_version":"'),
            pl.col("_app_version"),
            pl.lit('"}'),
        ]
    )
    return [
        *(pl.when(~pl.col(flag)).then(pl.col(name)).alias(name) for name, flag in null_if.items()),
        pl.when(pl.col("_agent")).then(pl.col("trace_id")).alias("trace_id"),
        # OTLP: every span has a trace (an agent run's, else one of its own) and ends at the
        # instant the canonical timestamp text denotes (whole seconds for some producers).
        pl.when(pl.col("_agent"))
        .then(pl.col("trace_id"))
        .otherwise(pl.concat_str([pl.col("_h2"), pl.col("_h1")]))
        .alias("_otlp_trace"),
        pl.col("_h1").alias("_span_id"),
        pl.when(pl.col("_with_ms"))
        .then(pl.col("_ts_ms"))
        .otherwise(pl.col("_ts_ms") // 1000 * 1000)
        .alias("_inst_ms"),
        _ts_text(pl.col("_local_ms"), pl.col("_with_ms"), pl.col("_suffix")).alias("timestamp"),
        metadata.alias("metadata"),  # null where the producer sends no metadata
    ]


@functools.cache
def _line_expr(malformed: bool) -> pl.Expr:
    """The JSON line of a wire row; for malformed rows each reason's variant is applied."""
    raw = {name: _q(pl.col(name)) for name in _STRING_FIELDS}
    raw |= {name: _int_raw(name) for name in ("attempt", *TOKEN_FIELDS)}
    raw["metadata"] = pl.col("metadata")
    if malformed:
        raw["sdk_version"] = pl.lit(None, dtype=pl.String)
        for code, variants in _VARIANTS.items():
            r = LINE_REASONS.index(code)
            for v, overrides in enumerate(variants):
                hit = (pl.col("_reason") == r) & (pl.col("_variant") == v)
                for name, expr in overrides.items():
                    value = pl.lit(None, dtype=pl.String) if expr is None else expr
                    raw[name] = pl.when(hit).then(value).otherwise(raw[name])
    pieces = [pl.concat_str([pl.lit(f'"{name}":'), raw[name]]) for name in _JSON_FIELDS]
    line = pl.concat_str(
        [pl.lit("{"), pl.concat_str(pieces, separator=",", ignore_nulls=True), pl.lit("}")]
    )
    if malformed:
        truncated = line.str.slice(0, line.str.len_chars() // 2)
        invalid = pl.col("_reason") == LINE_REASONS.index("invalid_json")
        line = pl.when(invalid).then(truncated).otherwise(line)
    return line.alias("line")


def _json_lines(wire: pl.DataFrame) -> pl.Series:
    """JSON lines of every row: the variants are only evaluated on the (few) malformed rows."""
    lines = wire.select(_line_expr(malformed=False)).to_series()
    reason = wire.get_column("_reason").to_numpy()
    shape = wire.get_column("_shape").to_numpy()
    bad = np.flatnonzero((reason >= 0) & (shape == sh.S[sh.CANONICAL]))
    if len(bad):
        excl_in = pl.max_horizontal(
            pl.col("input_tokens")
            - pl.col("cached_input_tokens").fill_null(0)
            - pl.col("cache_write_tokens").fill_null(0),
            1,
        )
        bad_lines = (
            wire[pl.Series(bad)]
            .with_columns(_excl_in=excl_in)
            .select(_line_expr(malformed=True))
            .to_series()
        )
        lines = lines.scatter(bad, bad_lines)
    for name, expr in sh.one_line_exprs().items():
        rows = np.flatnonzero((shape == sh.S[name]) & (reason < 0))
        if len(rows):
            lines = lines.scatter(rows, wire[pl.Series(rows)].select(expr).to_series())
        for r in np.unique(reason[(shape == sh.S[name]) & (reason >= 0)]):
            code = LINE_REASONS[r]
            rows = np.flatnonzero((shape == sh.S[name]) & (reason == r))
            faulty = wire[pl.Series(rows)].with_columns(**sh.bad_overrides(name, code))
            text = faulty.select(sh.bad_line(name, code, expr)).to_series()
            lines = lines.scatter(rows, text)
    return lines


def _multi_lines(wire: pl.DataFrame) -> pl.DataFrame:
    """The lines of the shapes that are not one line per attempt, with the object and time
    that place them: OTLP batches (many spans and one non-GenAI span per line) and the two
    lines (input, output) of each per-token-type attempt. Columns: _hp, obj, key, line."""
    schema = {"_hp": pl.Int64, "obj": pl.Int64, "key": pl.Int64, "line": pl.String}
    parts = [pl.DataFrame(schema=schema)]
    otlp = wire.filter(pl.col("_shape") == sh.S[sh.OTLP])
    if otlp.height:
        # A malformed span: its cache read exceeds its input (the only OTLP fault sent).
        broken = pl.col("_reason") == LINE_REASONS.index("subset_invariant_broken")
        cached = sh.bad_overrides(sh.OTLP, "subset_invariant_broken")["cached_input_tokens"]
        otlp = otlp.with_columns(
            cached_input_tokens=pl.when(broken).then(cached).otherwise("cached_input_tokens")
        )
        spans = (
            otlp.with_columns(_span=sh.otlp_span(), _http=sh.otlp_http_span())
            .sort("_hp", "_otlp_batch", "_ts_ms", maintain_order=True)
            .group_by("_hp", "_otlp_batch", maintain_order=True)
            .agg(
                pl.col("_obj").first().alias("obj"),
                (pl.col("_ts_ms").first() % _HOUR_MS).alias("key"),
                pl.concat_str(
                    [pl.col("_span").str.join(","), pl.col("_http").first()], separator=","
                ).alias("_spans"),
                *(
                    pl.col(c).first()
                    for c in ("_app", "customer_id", "environment", "_customer_on_span")
                ),
            )  # fmt: skip
        )
        parts.append(
            spans.select("_hp", "obj", "key", sh.otlp_line(pl.col("_spans")).alias("line"))
        )
    token = wire.filter(pl.col("_shape") == sh.S[sh.TOKEN_TYPE])
    if token.height:
        # A malformed attempt is one line of type total (input + output) instead of two.
        total = pl.col("_reason") == LINE_REASONS.index("unknown_token_type")
        kinds = [(~total, line) for line in sh.token_type_lines()]
        for keep, line in [*kinds, (total, sh.token_type_total_line())]:
            parts.append(
                token.filter(keep).select(
                    "_hp",
                    pl.col("_obj").alias("obj"),
                    (pl.col("_ts_ms") % _HOUR_MS).alias("key"),
                    line.alias("line"),
                )
            )
    return pl.concat(parts).sort("_hp", "obj", "key", maintain_order=True)


def _object_rows(hp: _HourPlan, o: int) -> np.ndarray:
    """Row indices (within the hour) of object ``o``, duplicates included, in write order."""
    rows = np.flatnonzero(hp.obj == o)
    dups = hp.dup_obj == o
    index = np.concatenate([rows, hp.dup_src[dups]])
    ts = hp.rows["ts"]
    key = np.concatenate([ts[rows], ts[hp.dup_src[dups]] + hp.dup_delay[dups]])
    return index[np.argsort(key, kind="stable")]


def _render_chunk(
    c: _Customers, mp: _MonthPlan, hps: list[_HourPlan], ids: _Ids
) -> Iterator[GeneratedObject]:
    """Render the objects of some consecutive hours (one polars pass for all of them)."""
    wire = _wire_frame(c, mp, hps, ids)
    any_jsonl = any(f != _PARQUET for hp in hps for f in hp.formats)
    bodies = _jsonl_bodies(wire, hps) if any_jsonl else {}
    parquet_rows = wire.select(_PARQUET_FIELDS)
    first = 0
    for i, hp in enumerate(hps):
        prefix = _hour_prefix(mp, hp.hour)
        for o, fmt in enumerate(hp.formats):
            key = f"{prefix}part-{o:04d}.{FORMATS[fmt]}"
            if fmt == _PARQUET:
                take = pl.Series(first + _object_rows(hp, o))
                buf = io.BytesIO()
                pq.write_table(parquet_rows[take].to_arrow(), buf, compression="zstd")
                yield GeneratedObject(key, buf.getvalue())
            else:
                body = (bodies[(i, o)] + "\n").encode()
                if fmt == 0:
                    body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
                yield GeneratedObject(key, body)
        first += len(hp.bad_reason)


def _jsonl_bodies(wire: pl.DataFrame, hps: list[_HourPlan]) -> dict[tuple[int, int], str]:
    """(hour position, object) -> the object's lines, in time order (a resend at its delay;
    an OTLP batch at its first span), for every JSON-lines object of the chunk."""
    lines = _json_lines(wire)
    one_line = np.isin(wire.get_column("_shape").to_numpy(), [sh.S[s] for s in sh.ONE_LINE])
    hp_col, obj_col, key_col, src_col = [], [], [], []
    first = 0
    for i, hp in enumerate(hps):
        rows = np.flatnonzero(one_line[first : first + len(hp.bad_reason)])
        ts = hp.rows["ts"]
        hp_col += [np.full(len(rows) + len(hp.dup_src), i, dtype=np.int64)]
        obj_col += [hp.obj[rows], hp.dup_obj]
        key_col += [ts[rows], ts[hp.dup_src] + hp.dup_delay]
        src_col += [first + rows, first + hp.dup_src]
        first += len(hp.bad_reason)
    entries = pl.DataFrame(
        {
            "_hp": np.concatenate(hp_col),
            "obj": np.concatenate(obj_col),
            "key": np.concatenate(key_col),
            "line": lines.gather(np.concatenate(src_col)),
        }
    )
    multi = _multi_lines(wire)
    if multi.height:
        entries = pl.concat([entries, multi]).sort("_hp", "obj", "key", maintain_order=True)
    else:
        entries = entries.sort("_hp", "obj", "key", maintain_order=True)
    joined = entries.group_by("_hp", "obj", maintain_order=True).agg(pl.col("line").str.join("\n"))
    return {
        (h, o): text
        for h, o, text in zip(joined["_hp"], joined["obj"], joined["line"], strict=True)
    }


#: An hour of more rows than this is rendered alone, object by object, in windows of about
#: this many lines (each row takes a few KB while rendered): memory stays bounded whatever
#: the hour's size (a hot hour of millions of events is ONE object).
WINDOW_ROWS = 32_768
#: A body larger than this is written to a temporary file as it is rendered (see
#: GeneratedObject.spool), so no object's body has to fit in memory.
SPOOL_BYTES = 64 * 1024 * 1024
#: Rows the rendering processes may work ahead of the oldest chunk in flight (their bodies
#: wait in memory, ~100-160 bytes a row): about as many as one process renders while
#: another renders a 2M-event hot hour.
AHEAD_ROWS = 2_000_000


@dataclass(frozen=True)
class _Sizes:
    """The rendering sizes a month's processes use (read from the module when it starts)."""

    window_rows: int = WINDOW_ROWS
    spool_bytes: int = SPOOL_BYTES
    spool_dir: str | None = None  # None: tempfile's default (TMPDIR)

    @classmethod
    def now(cls) -> _Sizes:
        return cls(WINDOW_ROWS, SPOOL_BYTES, tempfile.gettempdir())


def _render_windows(
    c: _Customers, mp: _MonthPlan, hp: _HourPlan, ids: _Ids, sizes: _Sizes | None = None
) -> Iterator[GeneratedObject]:
    """The objects of one hour, each rendered in windows of about ``window_rows`` lines: the
    same keys and bytes as :func:`_render_chunk` renders in one pass (a test compares them).

    A JSON-lines object's lines are in time order (``_jsonl_bodies``), so a window is a range
    of that order's keys; it renders the rows whose lines fall in it (an OTLP batch with all
    its spans, a resend with its source row) as a plan of their own, and its text is
    gzip-streamed into the body. A Parquet object's rows are rendered in windows and
    written in one table (its bytes do not depend on the windows)."""
    sizes = sizes or _Sizes.now()
    window_rows = sizes.window_rows
    counters = _row_counters(hp.bad_reason)
    prefix = _hour_prefix(mp, hp.hour)
    for o, fmt in enumerate(hp.formats):
        key = f"{prefix}part-{o:04d}.{FORMATS[fmt]}"
        if fmt == _PARQUET:
            rows = _object_rows(hp, o)
            tables = []
            for start in range(0, len(rows), window_rows):
                sel, at = np.unique(rows[start : start + window_rows], return_inverse=True)
                sub = _window_plan(hp, counters, sel, np.ones(len(sel), dtype=bool), [], fmt)
                wire = _wire_frame(c, mp, [sub], ids).select(_PARQUET_FIELDS)
                tables.append(wire[pl.Series(at)].to_arrow())
            buf = io.BytesIO()
            pq.write_table(pa.concat_tables(tables).combine_chunks(), buf, compression="zstd")
            yield GeneratedObject(key, buf.getvalue())
            continue
        body = _BodyWriter(fmt == 0, sizes)
        for sel, emit, dups in _jsonl_windows(hp, o, window_rows):
            sub = _window_plan(hp, counters, sel, emit, dups, fmt)
            text = _jsonl_bodies(_wire_frame(c, mp, [sub], ids), [sub])[(0, 0)]
            body.write((text + "\n").encode())
        yield body.close(key)


def _jsonl_windows(
    hp: _HourPlan, o: int, window_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Windows of JSON-lines object ``o``'s lines: (rows to render, sorted; which of them are
    lines of this window rather than only the source of a resend; the resends, as indices
    into ``hp.dup_src``). Lines are ordered by key (the time in the hour: an attempt's, a
    resend's at its delay, an OTLP batch's first span's), ties in one window."""
    ts, shape = hp.rows["ts"], hp.rows["shape"]
    mine = hp.obj == o
    is_otlp = shape == sh.S[sh.OTLP]
    direct = np.flatnonzero(mine & ~is_otlp)  # one line per attempt, or a token-type pair
    dups = np.flatnonzero(hp.dup_obj == o)
    dup_key = ts[hp.dup_src[dups]] + hp.dup_delay[dups]
    otlp = np.flatnonzero(mine & is_otlp)
    batch = hp.rows["otlp_batch"][otlp]
    batches, first = np.unique(batch, return_inverse=True)
    batch_key = np.full(len(batches), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(batch_key, first, ts[otlp])
    keys = np.sort(np.concatenate([ts[direct], dup_key, batch_key]))
    cuts = np.unique(keys[::window_rows])
    bounds = [*cuts.tolist(), np.iinfo(np.int64).max]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = direct[(ts[direct] >= lo) & (ts[direct] < hi)]
        rows = np.union1d(rows, otlp[np.isin(batch, batches[(batch_key >= lo) & (batch_key < hi)])])
        resends = dups[(dup_key >= lo) & (dup_key < hi)]
        sel = np.union1d(rows, hp.dup_src[resends])
        yield sel, np.isin(sel, rows), resends


def _window_plan(
    hp: _HourPlan,
    counters: np.ndarray,
    sel: np.ndarray,
    emit: np.ndarray,
    dups: np.ndarray | list,
    fmt: int,
) -> _HourPlan:
    """Rows ``sel`` (sorted indices) of an hour as a plan of one object (0) of format
    ``fmt``: the rows where ``emit`` and the resends ``dups`` (indices into ``hp.dup_src``)
    are its lines; the other rows (object -1) are only rendered as a resend's source."""
    dups = np.asarray(dups, dtype=np.int64)
    return _HourPlan(
        hour=hp.hour,
        rows={k: v[sel] for k, v in hp.rows.items()},
        bad_reason=hp.bad_reason[sel],
        bad_variant=hp.bad_variant[sel],
        obj=np.where(emit, 0, -1),
        dup_src=np.searchsorted(sel, hp.dup_src[dups]),
        dup_obj=np.zeros(len(dups), dtype=np.int64),
        dup_delay=hp.dup_delay[dups],
        formats=[fmt],
        counters=counters[sel],
    )


class _BodyWriter:
    """An object's body, written piece by piece (gzip-compressed as it comes for .jsonl.gz:
    the same bytes as gzip.compress(..., mtime=0) of the whole), in memory up to
    SPOOL_BYTES, then in a temporary file."""

    def __init__(self, gzipped: bool, sizes: _Sizes):
        self._sizes = sizes
        self._zip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if gzipped else None
        self._parts: list[bytes] = []
        self._size = 0
        self._file = None

    def write(self, data: bytes) -> None:
        self._put(self._zip.compress(data) if self._zip else data)

    def _put(self, data: bytes) -> None:
        if self._file is None and self._size + len(data) > self._sizes.spool_bytes:
            self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close())
                prefix="tokenbill-object-", suffix=".part", dir=self._sizes.spool_dir, delete=False
            )
            self._file.writelines(self._parts)
            self._parts = []
        if self._file is None:
            self._parts.append(data)
        else:
            self._file.write(data)
        self._size += len(data)

    def close(self, key: str) -> GeneratedObject:
        if self._zip:
            self._put(self._zip.flush())
        if self._file is None:
            return GeneratedObject(key, b"".join(self._parts))
        self._file.close()
        return GeneratedObject(key, spool=Path(self._file.name))


def _hour_prefix(mp: _MonthPlan, hour: int) -> str:
    return f"dt={mp.year:04d}-{mp.mon:02d}-{hour // 24 + 1:02d}/hour={hour % 24:02d}/"


# ---------------------------------------------------------------------------------------------
# Manifest.


class _Manifest:
    def __init__(self, mp: _MonthPlan, c: _Customers):
        self.mp, self.c = mp, c
        self.by_reason = np.zeros(len(LINE_REASONS), dtype=np.int64)
        self.valid = self.dups = self.rows_parquet = 0
        self.by_status = np.zeros(len(STATUSES), dtype=np.int64)
        self.objects = dict.fromkeys(FORMATS, 0)
        self.specials: list[dict] = []
        shape = (len(TOKEN_FIELDS) + 1,)
        self.by_customer = np.zeros((N_CUSTOMERS, *shape), dtype=np.int64)
        self.by_model = np.zeros((len(MODELS), *shape), dtype=np.int64)
        k = len(sh.REPORTED)
        # per reported shape: valid records, duplicate records, quarantined records, lines
        self.by_shape = np.zeros((k, 4), dtype=np.int64)
        self.added = np.zeros(len(sh.ADDED_COUNTS), dtype=np.int64)
        self.otlp_lines = 0

    def add_hour(self, hp: _HourPlan | None, hour: int) -> None:
        if hp is not None:
            r, valid = hp.rows, hp.bad_reason < 0
            # A per-token-type attempt lands as two events (its input row, its output row).
            weight = np.where(r["shape"] == sh.S[sh.TOKEN_TYPE], 2, 1)
            weight = np.where(valid, weight, 0)
            self.valid += int(weight.sum())
            self.dups += len(hp.dup_src)
            self.by_reason += np.bincount(hp.bad_reason[~valid], minlength=len(LINE_REASONS))
            self.by_status += _int_bincount(r["status"], weight, len(STATUSES))
            for fmt in hp.formats:
                self.objects[FORMATS[fmt]] += 1
            values = [weight] + [
                np.where(valid & ~r.get(f"{f}_null", np.zeros_like(valid)), r[f], 0)
                for f in TOKEN_FIELDS
            ]
            for j, v in enumerate(values):
                self.by_customer[:, j] += _int_bincount(r["cust"], v, N_CUSTOMERS)
                self.by_model[:, j] += _int_bincount(r["model"], v, len(MODELS))
            self.added += [int(r[f][valid].sum()) for f in sh.ADDED_COUNTS]
            named = sh.reported(r["shape"], r["ce_inner"], hp.bad_reason, LINE_REASONS)
            k = len(sh.REPORTED)
            self.by_shape[:, 0] += _int_bincount(named, weight, k)
            self.by_shape[:, 1] += np.bincount(named[hp.dup_src], minlength=k)
            self.by_shape[:, 2] += np.bincount(named[~valid], minlength=k)
            lines = np.where(r["shape"] == sh.S[sh.OTLP], 0, np.where(valid, weight, 1))
            self.by_shape[:, 3] += _int_bincount(named, lines, k)
            self.by_shape[:, 3] += np.bincount(named[hp.dup_src], minlength=k)
            self.by_shape[sh.REPORTED.index(sh.OTLP), 3] += hp.otlp_batches
            self.otlp_lines += hp.otlp_batches
            first_special = len(hp.formats)
        else:
            first_special = 0
        for i, (suffix, reason, _) in enumerate(self.mp.specials.get(hour, [])):
            self.specials.append(
                {"key": _special_key(self.mp, hour, first_special + i, suffix), "reason": reason}
            )

    _SUMS = ("by_reason", "valid", "dups", "rows_parquet", "by_status", "by_customer",
             "by_model", "by_shape", "added", "otlp_lines")  # fmt: skip

    def counts(self) -> dict:
        """What :meth:`merge` adds to another accumulator (picklable, small)."""
        return {k: getattr(self, k) for k in self._SUMS} | {
            "objects": self.objects,
            "specials": self.specials,
        }

    def merge(self, counts: dict) -> None:
        """Add the counts of later hours (merged in hour order)."""
        for k in self._SUMS:
            setattr(self, k, getattr(self, k) + counts[k])
        for fmt, n in counts["objects"].items():
            self.objects[fmt] += n
        self.specials += counts["specials"]

    def result(self) -> dict:
        mp = self.mp
        columns = ("events", *TOKEN_FIELDS)
        malformed = int(self.by_reason.sum())
        object_reasons = {code: 0 for code in OBJECT_REASONS}
        for s in self.specials:
            object_reasons[s["reason"]] += 1
        reasons = LINE_REASONS if mp.shapes == "mixed" else CANONICAL_LINE_REASONS
        return {
            "month": mp.month,
            "events": mp.events,
            "seed": mp.seed,
            "shapes_mode": mp.shapes,
            "lines": {
                "total": self.valid + self.dups + malformed,
                "valid_unique": self.valid,
                "duplicate": self.dups,
                "malformed": malformed,
            },
            "malformed_by_reason": {
                code: int(n)
                for code, n in zip(LINE_REASONS, self.by_reason, strict=True)
                if code in reasons
            },
            "objects": {
                "total": sum(self.objects.values()) + len(self.specials),
                **self.objects,
                **object_reasons,
            },
            "special_objects": self.specials,
            **(
                {"hot_hours": [_hour_prefix(mp, h).rstrip("/") for h in sorted(mp.hot)]}
                if mp.hot
                else {}
            ),
            "tokens": {
                f: int(self.by_customer[:, j + 1].sum()) for j, f in enumerate(TOKEN_FIELDS)
            },
            "subset_tokens": dict(zip(sh.ADDED_COUNTS, map(int, self.added), strict=True)),
            "valid_by_status": {s: int(n) for s, n in zip(STATUSES, self.by_status, strict=True)},
            "shapes": {
                name: dict(
                    zip(("valid", "duplicate", "quarantined", "lines"), map(int, row), strict=True)
                )  # fmt: skip
                for name, row in zip(sh.REPORTED, self.by_shape, strict=True)
                if row.any()
            },
            "otlp_spans_skipped": self.otlp_lines,
            "by_customer": {
                cid: dict(zip(columns, map(int, row), strict=True))
                for cid, row in zip(self.c.ids.to_list(), self.by_customer, strict=True)
                if row[0]
            },
            "by_model": {
                name: dict(zip(columns, map(int, row), strict=True))
                for (_, name), row in zip(MODELS, self.by_model, strict=True)
                if row[0]
            },
        }


def _int_bincount(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Exact integer bincount (float64 sums are exact below 2**53; one hour is far below)."""
    sums = np.bincount(index, weights=values.astype(np.float64), minlength=size)
    assert sums.max(initial=0) < 2**53
    return np.rint(sums).astype(np.int64)


def _special_key(mp: _MonthPlan, hour: int, index: int, suffix: str) -> str:
    name = suffix if not suffix.startswith(".") else f"part-{index:04d}{suffix}"
    return _hour_prefix(mp, hour) + name


# ---------------------------------------------------------------------------------------------
# Public API.


class GeneratedMonth(Iterator[GeneratedObject]):
    """Iterator over one month's objects, hour by hour; ``manifest`` once it is exhausted.

    ``workers`` > 1 renders chunks of hours in that many processes (hours are independent:
    the same keys and bytes, in the same order, as one process). Chunks are submitted while
    fewer than ``2 * workers`` are in flight or fewer than AHEAD_ROWS rows are behind the
    oldest (whose objects come first): a hot hour rendering in one process does not hold
    the others idle, and memory stays bounded by about AHEAD_ROWS rows of bodies (those
    above SPOOL_BYTES are files, see GeneratedObject)."""

    def __init__(
        self,
        month: str,
        events: int,
        seed: int = 7,
        shapes: str = "mixed",
        hot_hours: int = 0,
        hot_hour_events: int = 0,
        workers: int = 1,
    ):
        self._args = (month, events, seed, shapes, hot_hours, hot_hour_events)
        self._plan = _plan_month(*self._args)
        self._customers = _customers(seed)
        self._acc = _Manifest(self._plan, self._customers)
        self._workers = max(1, int(workers))
        self._sizes = _Sizes.now()
        self._manifest: dict | None = None
        self._it = self._objects()

    def _chunks(self) -> list[list[int]]:
        """Consecutive hours of at least CHUNK_ROWS rows (a hour plans exactly its rows); an
        hour of more than WINDOW_ROWS rows is a chunk of its own (rendered in windows)."""
        mp = self._plan
        chunks, chunk, rows = [], [], 0
        for hour in range(mp.hours):
            hour_rows = int(mp.n_valid[hour]) + len(mp.bad_reasons[hour])
            if hour_rows > self._sizes.window_rows and chunk:
                chunks.append(chunk)
                chunk, rows = [], 0
            chunk.append(hour)
            rows += hour_rows
            if rows >= CHUNK_ROWS or hour == mp.hours - 1:
                chunks.append(chunk)
                chunk, rows = [], 0
        return chunks

    def _objects(self) -> Iterator[GeneratedObject]:
        chunks = self._chunks()
        if self._workers == 1:
            for hours in chunks:
                objects, counts = _chunk_objects(self._args, hours, self._sizes)
                self._acc.merge(counts)
                yield from objects
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # no fork of a threaded parent
            with ProcessPoolExecutor(max_workers=self._workers, mp_context=ctx) as pool:
                pending: deque = deque()  # (future, rows), in key order
                for hours in chunks:
                    while len(pending) >= 2 * self._workers and self._ahead(pending) >= AHEAD_ROWS:
                        yield from self._collect(pending.popleft()[0])
                    future = pool.submit(_chunk_objects, self._args, hours, self._sizes)
                    pending.append((future, self._rows(hours)))
                while pending:
                    yield from self._collect(pending.popleft()[0])
        self._manifest = self._acc.result()

    def _rows(self, hours: list[int]) -> int:
        mp = self._plan
        return sum(int(mp.n_valid[h]) + len(mp.bad_reasons[h]) for h in hours)

    @staticmethod
    def _ahead(pending: deque) -> int:
        """Rows submitted after the oldest chunk still pending (its objects come first)."""
        return sum(rows for _, rows in list(pending)[1:])

    def _collect(self, future) -> list[GeneratedObject]:
        objects, counts = future.result()
        self._acc.merge(counts)
        return objects

    def __iter__(self) -> GeneratedMonth:
        return self

    def __next__(self) -> GeneratedObject:
        return next(self._it)

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            raise RuntimeError("the manifest is known once every object has been generated")
        return self._manifest


@functools.lru_cache(maxsize=2)
def _month_context(args: tuple) -> tuple[_MonthPlan, _Customers, _Ids]:
    return _plan_month(*args), _customers(args[2]), _Ids(args[2])


def _chunk_objects(
    args: tuple, hours: list[int], sizes: _Sizes
) -> tuple[list[GeneratedObject], dict]:
    """The objects of some consecutive hours, in key order, and their manifest counts."""
    mp, c, ids = _month_context(args)
    acc = _Manifest(mp, c)
    chunk = []
    for hour in hours:
        hp = _plan_hour(c, mp, hour)
        acc.add_hour(hp, hour)
        chunk.append((hour, hp))
    big = {hour for hour, hp in chunk if hp is not None and len(hp.bad_reason) > sizes.window_rows}
    plans = [hp for hour, hp in chunk if hp is not None and hour not in big]
    rendered = iter(_render_chunk(c, mp, plans, ids) if plans else ())
    objects = []
    for hour, hp in chunk:
        n_regular = 0 if hp is None else len(hp.formats)
        if hour in big:
            objects += _render_windows(c, mp, hp, ids, sizes)
        else:
            objects += [next(rendered) for _ in range(n_regular)]
        for i, (suffix, _, body) in enumerate(mp.specials.get(hour, [])):
            objects.append(GeneratedObject(_special_key(mp, hour, n_regular + i, suffix), body))
    return objects, acc.counts()


def generate_month(
    month: str,
    events: int,
    seed: int = 7,
    shapes: str = "mixed",
    hot_hours: int = 0,
    hot_hour_events: int = 0,
    workers: int = 1,
) -> GeneratedMonth:
    """The objects of ``month`` ("2026-10") holding exactly ``events`` valid unique events.

    ``shapes="mixed"`` sends about 60% of the attempts in producers' own shapes (see
    ``tools.generator.shapes``); ``"canonical"`` sends every one as a canonical
    event (the same events: only the wire form differs). ``hot_hours`` hours (chosen on a
    stream of their own) hold exactly ``hot_hour_events`` valid events each, in ONE
    ``.jsonl.gz`` object per hot hour; the other hours share the rest of ``events``.
    Same arguments -> same keys and bytes, whatever ``workers`` (processes that render).
    The returned iterator carries the manifest (see :func:`generation_manifest`) in
    ``.manifest`` once exhausted.
    """
    return GeneratedMonth(month, events, seed, shapes, hot_hours, hot_hour_events, workers)


def generation_manifest(
    month: str,
    events: int,
    seed: int = 7,
    shapes: str = "mixed",
    hours: Iterable[int] | None = None,
    hot_hours: int = 0,
    hot_hour_events: int = 0,
) -> dict:
    """What :func:`generate_month` writes, computed without rendering any object.

    Keys: ``lines`` (``total`` records in readable objects = ``valid_unique`` +
    ``duplicate`` + ``malformed``; a record is a line or Parquet row, except that an OTLP
    line holds one per GenAI span), ``malformed_by_reason`` (every line-level reason code
    of the month's mode), ``objects`` (``total``, per format, ``unreadable_object``,
    ``unsupported_format``), ``special_objects`` (their keys), ``tokens`` (sums over valid
    unique events, null as 0), ``subset_tokens`` (the TTL and audio subsets the producer
    shapes report), ``valid_by_status``, ``by_customer`` and ``by_model`` (events and token
    sums), ``shapes`` (per ``source_format`` of ingestion's format audit: valid, duplicate
    and quarantined records, and physical lines) and ``otlp_spans_skipped`` (the non-GenAI
    spans of the OTLP lines). A per-token-type attempt lands as two events.

    ``hours`` (indices from the month's first hour) restricts every count to those hours'
    objects (each hour is planned on its own, so this is what uploading only them writes).
    """
    mp = _plan_month(month, events, seed, shapes, hot_hours, hot_hour_events)
    c = _customers(seed)
    acc = _Manifest(mp, c)
    for hour in range(mp.hours) if hours is None else sorted(set(hours)):
        acc.add_hour(_plan_hour(c, mp, hour), hour)
    return acc.result()


_CONTENT_TYPES = {
    ".jsonl.gz": "application/gzip",
    ".jsonl": "application/x-ndjson",
    ".parquet": "application/vnd.apache.parquet",
}


def _content_type(key: str) -> str:
    for suffix, kind in _CONTENT_TYPES.items():
        if key.endswith(suffix):
            return kind
    return "application/octet-stream"


#: Objects larger than this are uploaded in parts of this size (in parallel).
MULTIPART_BYTES = 64 * 1024 * 1024


def upload(
    client, bucket: str, prefix: str, objects: Iterable[GeneratedObject], max_workers: int = 8
) -> dict:
    """Put every object under ``s3://bucket/prefix/`` (threads; at most 2*max_workers bodies
    in flight, so memory stays bounded). Creates nothing else. Returns objects and bytes."""
    prefix = prefix.strip("/")
    count = size = 0

    def put(obj: GeneratedObject) -> None:
        key = f"{prefix}/{obj.key}" if prefix else obj.key
        if obj.size <= MULTIPART_BYTES:
            client.put_object(Bucket=bucket, Key=key, Body=obj.body, ContentType=_content_type(key))
            return
        from boto3.s3.transfer import TransferConfig  # a large object: parts in parallel

        config = TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES
        )
        with obj.open() as body:  # a spool file is streamed from disk
            client.upload_fileobj(
                body, bucket, key, ExtraArgs={"ContentType": _content_type(key)}, Config=config
            )

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        pending: set = set()
        for obj in objects:
            if len(pending) >= 2 * max_workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
            pending.add(pool.submit(put, obj))
            count += 1
            size += obj.size
        for future in pending:
            future.result()
    return {"objects": count, "bytes": size}


def write_local(directory: str | Path, objects: Iterable[GeneratedObject]) -> dict:
    """Write every object to ``directory/<key>``. Returns objects and bytes."""
    root = Path(directory)
    count = size = 0
    for obj in objects:
        path = root / obj.key
        path.parent.mkdir(parents=True, exist_ok=True)
        obj.save(path)
        count += 1
        size += obj.size
    return {"objects": count, "bytes": size}
