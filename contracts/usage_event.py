"""The usage-event contract: one event per model-call attempt.

The pandera schema built here is the single source of truth for what a producer may send.
It validates the *wire* form of an event (every field as the text it arrived as, extracted
from the JSON line), so that a wrong type, a negative count or a broken subset invariant is
reported per line and per field instead of failing a whole cast. The JSON Schema published
for producers (``usage_event.schema.json``) is generated from it by ``python -m
contracts.usage_event``; a test keeps the committed file in sync.

Field semantics follow the OpenTelemetry GenAI conventions (see README, "The event
contract"): ``input_tokens`` and ``output_tokens`` are inclusive totals;
``cached_input_tokens`` and ``cache_write_tokens`` are subsets of input and
``reasoning_tokens`` a subset of output.

Every check is named after the quarantine reason code it produces, so a failed check maps
to a reason without a lookup table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandera.polars as pa
import polars as pl

#: Token counts (and ``attempt``) must be below this bound; anything larger is a producer bug.
MAX_COUNT = 10**9

STATUSES = ("success", "failed", "retried", "cancelled")

# Fields by kind. Order is the column order of the landed raw table.
REQUIRED_IDENTIFIERS = ("event_id", "customer_id", "model")
OPTIONAL_IDENTIFIERS = (
    "subscription_id",
    "plan",
    "feature",
    "provider",
    "environment",
    "region",
    "request_group_id",
    "trace_id",
)
REQUIRED_COUNTS = ("input_tokens", "output_tokens")
OPTIONAL_COUNTS = (
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    *(
        #: Optional subsets priced apart by some providers (issue #14): Anthropic's cache
        #: writes by TTL, and audio/image tokens of input and output.
        MODALITY_COUNTS := (
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "audio_input_tokens",
            "image_input_tokens",
            "audio_output_tokens",
            "image_output_tokens",
        )
    ),
)
TOKEN_FIELDS = REQUIRED_COUNTS + OPTIONAL_COUNTS
WIRE_FIELDS = (
    "event_id",
    "timestamp",
    "customer_id",
    "subscription_id",
    "plan",
    "feature",
    "provider",
    "model",
    "environment",
    "region",
    "status",
    "attempt",
    "request_group_id",
    "trace_id",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    *MODALITY_COUNTS,
    "metadata",
)
REQUIRED_FIELDS = ("event_id", "timestamp", "customer_id", "model", "input_tokens", "output_tokens")

#: Context column added by ingestion: the UTC hour named by the object's key.
SOURCE_HOUR = "source_hour"
#: Optional context column added by ingestion: the fields a line sent as an explicit JSON
#: ``null`` (a null wire value whose field is not listed was absent from the line). Only read
#: to word the detail of a missing field ("customer_id=null" or "customer_id absent").
NULL_FIELDS = "null_fields"
#: Characters of a value quoted in a quarantine detail; longer values are cut, with their length.
MAX_SHOWN_CHARS = 64


@dataclass(frozen=True)
class Reason:
    code: str
    what: str
    remedy: str


_REASON_LIST = [
    Reason(
        "invalid_json",
        "the line is not a JSON object",
        "send one JSON object per line (JSON Lines), UTF-8, no blank lines",
    ),
    Reason(
        "missing_required_field",
        "a required field is absent, null, empty or blank",
        "send event_id, timestamp, customer_id, model, input_tokens and output_tokens on "
        "every event",
    ),
    Reason(
        "wrong_type",
        "a field has the wrong type",
        "send token counts and attempt as integers or numeric strings, identifiers as "
        "strings (at most 256 characters), metadata as an object",
    ),
    Reason("negative_count", "a count is negative", "token counts and attempt are >= 0"),
    Reason(
        "count_out_of_range",
        f"a count is out of range (token counts < {MAX_COUNT:,}; attempt from 1)",
        "check the producer's unit (tokens, not characters or bytes)",
    ),
    Reason(
        "subset_invariant_broken",
        "cached_input_tokens + cache_write_tokens > input_tokens, or reasoning_tokens > "
        "output_tokens, or the TTL or modality subsets exceed their total",
        "send inclusive totals: input_tokens includes cache reads and writes, output_tokens "
        "includes reasoning (see usage-event semantics in the README)",
    ),
    Reason(
        "unparseable_timestamp",
        "timestamp is not RFC 3339 with an offset",
        "send e.g. 2026-10-05T07:12:00.123Z or 2026-10-05T09:12:00+02:00",
    ),
    Reason(
        "timestamp_outside_hour",
        "the event's UTC hour differs from the hour in the object's key",
        "write each event under <prefix>/dt=YYYY-MM-DD/hour=HH/ of its own UTC hour",
    ),
    Reason(
        "unknown_status",
        f"status is not one of {', '.join(STATUSES)}",
        "map the producer's status onto one of the four values",
    ),
    Reason(
        "ambiguous_format",
        "the line has the keys of more than one producer shape",
        "send one shape per line (see 'Sending usage' in the README): e.g. canonical counts "
        "or a provider response, not both; name the provider when its usage keys do not",
    ),
    Reason(
        "unrecognized_format",
        "the line is in no known producer shape",
        "send a canonical event, an envelope with the provider's response, OTLP JSON, a "
        "LiteLLM spend log or a CloudEvent of one of those (see 'Sending usage' in the README)",
    ),
    Reason(
        "usage_not_reported",
        "the provider reported no usage for the attempt (e.g. a stream cancelled before its "
        "final usage chunk): its usage is unknown, not zero",
        "find the attempt's usage (provider dashboard or invoice) and send it under the same "
        "event_id in the same hour; then re-run its hour partition",
    ),
    Reason(
        "unknown_token_type",
        "a per-token-type event's type is not input or output",
        "send one event per request and token type, type input (prompt) or output (completion)",
    ),
    Reason(
        "unreadable_object",
        "the object could not be read (corrupt gzip or Parquet, or not UTF-8)",
        "re-upload the object; then re-run its hour partition",
    ),
    Reason(
        "unsupported_format",
        "the object's name does not end in .jsonl, .jsonl.gz or .parquet",
        "rename or convert the object; then re-run its hour partition",
    ),
]
REASONS: dict[str, Reason] = {r.code: r for r in _REASON_LIST}
OBJECT_REASONS = ("unreadable_object", "unsupported_format")
#: Reasons given while a line in a producer's shape is mapped, before the contract's checks
#: (orchestration/defs/ingestion/shapes.py).
SHAPE_REASONS = (
    "ambiguous_format",
    "unrecognized_format",
    "usage_not_reported",
    "unknown_token_type",
)


# ---------------------------------------------------------------------------------------------
# Vectorised parsing helpers shared by the checks and by the typed conversion.

_RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"


def parse_timestamp(expr: pl.Expr) -> pl.Expr:
    """RFC 3339 text with an offset -> UTC datetime (null where it does not parse)."""
    normalised = expr.str.replace(r"[Zz]$", "+00:00").str.replace(
        r"^(\d{4}-\d{2}-\d{2})[ t]", "${1}T"
    )
    return (
        pl.when(expr.str.contains(_RFC3339))
        .then(
            normalised.str.to_datetime(
                "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us", time_zone="UTC"
            )
        )
        .otherwise(None)
    )


def parse_count(expr: pl.Expr) -> pl.Expr:
    """Integer text -> Int64 (null where it is not an integer or overflows)."""
    return pl.when(expr.str.contains(r"^-?\d{1,18}$")).then(expr.cast(pl.Int64, strict=False))


#: Every column check as (column, reason code, predicate), in schema order; filled by _check.
#: The schema runs each as a pandera check; :func:`passes_contract` runs all of them at once,
#: and :func:`contract_faults` each on its own, in one pass, where one fails.
_COLUMN_RULES: list[tuple[str, str, Callable[[pl.Expr], pl.Expr]]] = []
#: (column, reason code) -> what the rule expects, as a quarantine detail says it.
_EXPECTED: dict[tuple[str, str], str] = {}


def _check(name: str, predicate: Callable[[pl.Expr], pl.Expr], expected: str, **stats) -> pa.Check:
    """A vectorised column check named after its reason code; null values pass.

    ``expected`` says what a failing value should have been (quarantine details quote it).
    """

    def fn(data) -> pl.LazyFrame:
        col = pl.col(data.key)
        return data.lazyframe.select(predicate(col).fill_null(True))

    check = pa.Check(fn, name=name, statistics=stats or None)
    check.predicate = predicate  # read back by _columns to register the rule
    check.expected = expected
    return check


_INTEGER_TEXT = r"^-?\d+$"
_NEGATIVE_TEXT = r"^-0*[1-9]\d*$"
_COUNT_EXPECTED = "an integer or a numeric string"


def _count_checks(minimum: int) -> list[pa.Check]:
    # One reason per fault: a value of the wrong type is neither negative nor out of range,
    # and a negative one is not also out of range.
    return [
        _check(
            "wrong_type", lambda c: c.str.contains(_INTEGER_TEXT), _COUNT_EXPECTED, type="integer"
        ),
        _check(
            "negative_count",
            lambda c: ~c.str.contains(_NEGATIVE_TEXT),
            f"an integer >= {minimum}",
            minimum=0,
        ),
        _check(
            "count_out_of_range",
            lambda c: (
                pl.when(c.str.contains(_INTEGER_TEXT) & ~c.str.contains(_NEGATIVE_TEXT))
                .then(parse_count(c).is_between(minimum, MAX_COUNT - 1).fill_null(False))
                .otherwise(True)
            ),
            f"{minimum} <= n < {MAX_COUNT:,}",
            minimum=minimum,
            exclusive_maximum=MAX_COUNT,
        ),
    ]


def _not_blank(c: pl.Expr) -> pl.Expr:
    """Some character other than whitespace: "" and "   " are as good as absent."""
    return c.str.contains(r"\S")


def _identifier_checks(required: bool) -> list[pa.Check]:
    checks = [
        _check(
            "wrong_type",
            lambda c: ~c.str.contains(r"^[\[{]") & (c.str.len_chars() <= 256),
            "a string of at most 256 characters",
            type="string",
            maxLength=256,
        )
    ]
    if required:
        checks.append(
            _check("missing_required_field", _not_blank, "a non-blank string", pattern=r"\S")
        )
    return checks


def _column(name: str, checks: list[pa.Check], description: str) -> pa.Column:
    _COLUMN_RULES.extend((name, check.name, check.predicate) for check in checks)
    _EXPECTED.update({(name, check.name): check.expected for check in checks})
    if name in REQUIRED_FIELDS:  # pandera's not_nullable: absent or null
        _EXPECTED.setdefault((name, "missing_required_field"), checks[0].expected)
    return pa.Column(
        pl.String,
        checks=checks,
        nullable=name not in REQUIRED_FIELDS,
        required=True,
        description=description,
    )


_DESCRIPTIONS = {
    "event_id": "Idempotency key of the attempt, derived deterministically by the producer "
    "(e.g. provider response id + attempt). A resend with the same id is a duplicate.",
    "timestamp": "When the attempt finished: RFC 3339 with an offset; stored as UTC.",
    "customer_id": "The billed customer.",
    "subscription_id": "The customer's subscription, when the product knows it.",
    "plan": "The plan name the product believes the customer is on.",
    "feature": "Product feature that made the call (chat, code-review, ...).",
    "provider": "Model provider (openai, anthropic, gcp.gemini, aws.bedrock, ...).",
    "model": "Model name as requested (e.g. gpt-4o-mini, claude-sonnet-4-5).",
    "environment": "production, staging, ...",
    "region": "Provider region or deployment.",
    "status": "Outcome of the attempt; default success.",
    "attempt": "1 for the first attempt, 2 for the first retry, ...; default 1.",
    "request_group_id": "Shared by the retries of one logical call.",
    "trace_id": "Shared by every call of one agent run or trace.",
    "input_tokens": "Every prompt token, cache reads and cache writes included.",
    "cached_input_tokens": "Subset of input_tokens read from the provider's prompt cache.",
    "cache_write_tokens": "Subset of input_tokens written to the provider's prompt cache.",
    "output_tokens": "Every generated token, reasoning included.",
    "reasoning_tokens": "Subset of output_tokens spent on reasoning; null when not reported.",
    "cache_write_5m_tokens": "Subset of cache_write_tokens written with a 5-minute TTL "
    "(Anthropic, Bedrock); null when not reported.",
    "cache_write_1h_tokens": "Subset of cache_write_tokens written with a 1-hour TTL "
    "(Anthropic, Bedrock); null when not reported.",
    "audio_input_tokens": "Subset of input_tokens that are audio; null when not reported.",
    "image_input_tokens": "Subset of input_tokens that are images; null when not reported.",
    "audio_output_tokens": "Subset of output_tokens that are audio; null when not reported.",
    "image_output_tokens": "Subset of output_tokens that are images; null when not reported.",
    "metadata": "String map of anything else. Unknown top-level fields are merged into it.",
}


def _columns() -> dict[str, pa.Column]:
    cols: dict[str, pa.Column] = {}
    for name in WIRE_FIELDS:
        if name in REQUIRED_IDENTIFIERS or name in OPTIONAL_IDENTIFIERS:
            checks = _identifier_checks(required=name in REQUIRED_IDENTIFIERS)
        elif name in TOKEN_FIELDS:
            checks = _count_checks(minimum=0)
        elif name == "attempt":
            checks = _count_checks(minimum=1)
        elif name == "status":
            checks = [
                _check(
                    "unknown_status",
                    lambda c: c.is_in(list(STATUSES)),
                    f"one of {', '.join(STATUSES)}",
                    enum=list(STATUSES),
                )
            ]
        elif name == "timestamp":
            checks = [
                _check(
                    "missing_required_field",
                    _not_blank,
                    "an RFC 3339 timestamp with an offset",
                ),
                _check(
                    "unparseable_timestamp",
                    lambda c: parse_timestamp(c).is_not_null() | ~_not_blank(c),
                    "RFC 3339 with an offset, e.g. 2026-10-05T07:12:00Z",
                    format="date-time",
                ),
            ]
        elif name == "metadata":
            checks = [
                _check(
                    "wrong_type", lambda c: c.str.starts_with("{"), "a JSON object", type="object"
                )
            ]
        else:  # pragma: no cover - guards WIRE_FIELDS edits
            raise AssertionError(f"no checks defined for {name}")
        cols[name] = _column(name, checks, _DESCRIPTIONS[name])
    cols[SOURCE_HOUR] = pa.Column(
        pl.Datetime("us", "UTC"),
        nullable=False,
        description="Ingestion context: the UTC hour named by the object key.",
    )
    return cols


def _judged_count(name: str) -> pl.Expr:
    """A count's value where it passes its own column checks, else null.

    Row rules judge only such values: a count that is absent, of the wrong type, negative or
    out of range already has its own reason, and gets no second one from an invariant.
    """
    c = pl.col(name)
    n = parse_count(c)
    valid = c.str.contains(_INTEGER_TEXT) & ~c.str.contains(_NEGATIVE_TEXT) & (n < MAX_COUNT)
    return pl.when(valid).then(n)  # "-0" is 0, as the typed value is


#: The subset invariants: (subset counts, their total, why), each judged on its own.
_SUBSETS = (
    (
        ("cached_input_tokens", "cache_write_tokens"),
        "input_tokens",
        "input_tokens includes cache reads and writes",
    ),
    (("reasoning_tokens",), "output_tokens", "output_tokens includes reasoning"),
    (
        ("cache_write_5m_tokens", "cache_write_1h_tokens"),
        "cache_write_tokens",
        "cache_write_tokens includes the writes of every TTL",
    ),
    (
        ("audio_input_tokens", "image_input_tokens"),
        "input_tokens",
        "input_tokens includes every modality",
    ),
    (
        ("audio_output_tokens", "image_output_tokens"),
        "output_tokens",
        "output_tokens includes every modality",
    ),
)


def _total_count(total: str) -> pl.Expr:
    """A total as the invariants judge it: an optional total sent absent is 0 (its subsets
    cannot then be more than 0)."""
    if total in REQUIRED_COUNTS:
        return _judged_count(total)
    return pl.when(pl.col(total).is_null()).then(0).otherwise(_judged_count(total))


def _subset_broken(parts: tuple[str, ...], total: str) -> pl.Expr:
    """True where every count involved is judged (an optional one may be absent) and the
    subsets exceed the total; null or false elsewhere."""
    judged = [_total_count(total).is_not_null()]
    judged += [pl.col(p).is_null() | _judged_count(p).is_not_null() for p in parts]
    subsets = pl.sum_horizontal(_judged_count(p).fill_null(0) for p in parts)
    return pl.all_horizontal(judged) & (subsets > _total_count(total))


def _subset_invariant_holds() -> pl.Expr:
    broken = [_subset_broken(parts, total) for parts, total, _ in _SUBSETS]
    return ~pl.any_horizontal(broken).fill_null(False)


def _subset_invariant_detail() -> pl.Expr:
    """e.g. ``cached_input_tokens (90) + cache_write_tokens (20) = 110 > input_tokens (100)``,
    one part per broken invariant."""

    def term(name: str) -> pl.Expr:
        n = _judged_count(name)
        return (
            pl.when(n.is_null())
            .then(pl.lit(f"{name} (absent)"))
            .otherwise(pl.format(f"{name} ({{}})", n))
        )

    details = []
    for parts, total, why in _SUBSETS:
        subsets = pl.sum_horizontal(_judged_count(p).fill_null(0) for p in parts)
        lhs = (
            pl.format(" + ".join("{}" for _ in parts) + " = {}", *map(term, parts), subsets)
            if len(parts) > 1
            else term(parts[0])
        )
        expected = f"{' + '.join(parts)} <= {total} ({why})"
        details.append(
            pl.when(_subset_broken(parts, total).fill_null(False)).then(
                pl.format(
                    "{} > {}: subset_invariant_broken, expected {}",
                    lhs,
                    term(total),
                    pl.lit(expected),
                )
            )
        )
    return pl.concat_str(details, separator="; ", ignore_nulls=True)


_KEY_HOUR = "dt=%Y-%m-%d/hour=%H"


def _timestamp_in_source_hour() -> pl.Expr:
    ts = parse_timestamp(pl.col("timestamp"))
    return (ts.dt.truncate("1h") == pl.col(SOURCE_HOUR)).fill_null(True)


def _timestamp_outside_hour_detail() -> pl.Expr:
    """The event's UTC hour and the key's hour, both as the key names hours."""
    return pl.format(
        "timestamp={} (UTC hour {}): timestamp_outside_hour, expected a time in its object "
        "key's hour {}",
        _shown(pl.col("timestamp")),
        parse_timestamp(pl.col("timestamp")).dt.strftime(_KEY_HOUR),
        pl.col(SOURCE_HOUR).dt.strftime(_KEY_HOUR),
    )


#: The checks on whole rows, as (reason code, predicate, detail of a failing row).
_ROW_RULES: list[tuple[str, Callable[[], pl.Expr], Callable[[], pl.Expr]]] = [
    ("subset_invariant_broken", _subset_invariant_holds, _subset_invariant_detail),
    ("timestamp_outside_hour", _timestamp_in_source_hour, _timestamp_outside_hour_detail),
]


def _row_check(name: str, predicate: Callable[[], pl.Expr]) -> pa.Check:
    return pa.Check(lambda data: data.lazyframe.select(predicate()), name=name)


USAGE_EVENT_SCHEMA = pa.DataFrameSchema(
    columns=_columns(),
    checks=[_row_check(name, predicate) for name, predicate, _ in _ROW_RULES],
    strict=False,
    name="usage_event",
    description="One LLM usage event per model-call attempt (wire form, before typing).",
)


# ---------------------------------------------------------------------------------------------
# Validation: split a frame of wire events into typed valid rows and reasons per failed row.


def passes_contract() -> pl.Expr:
    """True for a row of wire events that passes every check of ``USAGE_EVENT_SCHEMA``.

    The same predicates as the schema's checks, plus its non-null requirements, evaluated as
    one expression: one vectorised pass over the rows, where pandera runs each check on its
    own and gathers failure cases. Rows for which this is false are then judged rule by rule
    (:func:`contract_faults`), which says why.
    """
    terms = [
        pl.col(name).is_not_null()
        for name, column in USAGE_EVENT_SCHEMA.columns.items()
        if not column.nullable
    ]
    terms += [predicate(pl.col(name)).fill_null(True) for name, _, predicate in _COLUMN_RULES]
    terms += [predicate() for _, predicate, _ in _ROW_RULES]
    return pl.all_horizontal(terms)


def validate_wire_events(wire: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Validate a frame of wire events (all ``WIRE_FIELDS`` as text plus ``source_hour``).

    Returns ``(valid, failures)``: ``valid`` is the typed subset of rows that pass every
    check (see :func:`to_typed`); ``failures`` has one row per failed input row with its
    position ``row`` in ``wire``, the sorted reason codes and a human-readable detail
    naming each field, the check and the offending value.

    Every row is screened by :func:`passes_contract`; only the rows it rejects (a fraction of
    a percent of real traffic) are judged rule by rule (:func:`contract_faults`), which says
    why.
    """
    failures = pl.DataFrame(
        schema={"row": pl.Int64, "reason_codes": pl.List(pl.String), "reason_detail": pl.String}
    )
    # One lazy pass: the screen and the typed values share their parsed timestamps and counts.
    screened = (
        wire.lazy()
        .select(
            pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
            passes_contract().alias("ok"),
            *_typed_exprs(wire.columns),
        )
        .collect()
    )
    suspects = screened.filter(~pl.col("ok"))["row"]
    if suspects.len():
        suspect_rows = wire[suspects]
        _require_structure(suspect_rows)
        faults = contract_faults(suspect_rows)
        if faults.height:
            summary = _summarise_faults(faults, suspect_rows)
            # Back from positions among the suspects to positions in ``wire``.
            failures = summary.with_columns(row=suspects.gather(summary["row"]))
    valid = screened.filter(~pl.col("row").is_in(failures["row"].implode()))
    return valid.drop("row", "ok"), failures


def _require_structure(wire: pl.DataFrame) -> None:
    """Every column of the schema, of its type: else ingestion has a bug (this is not bad
    input, and must not be quarantined). pandera would fail such a frame as a whole; as
    before, only the rows that need judging are held to it."""
    wrong = [
        f"{name}: {wire.schema.get(name, 'absent')}, expected {column.dtype}"
        for name, column in USAGE_EVENT_SCHEMA.columns.items()
        if name not in wire.schema or wire.schema[name] != column.dtype.type
    ]
    if wrong:
        raise RuntimeError("usage-event schema failed structurally: " + "; ".join(wrong))


def contract_faults(rows: pl.DataFrame) -> pl.DataFrame:
    """Every fault of every row of ``rows``: ``row`` (its position), ``field`` (null for a
    rule on the whole row) and ``reason``, in no particular order.

    Exactly what ``USAGE_EVENT_SCHEMA.validate(rows, lazy=True)`` reports (a test pins it),
    judged from the same rules (``_COLUMN_RULES``, ``_ROW_RULES`` and the schema's non-null
    columns) in one vectorised pass instead of one pandera check at a time: a required value
    that is null is ``missing_required_field``; a check fails where its predicate is false
    (pandera's ``ignore_na``: a null outcome passes).
    """
    rules: list[tuple[str | None, str, pl.Expr]] = [
        (name, "missing_required_field", pl.col(name).is_null())
        for name, column in USAGE_EVENT_SCHEMA.columns.items()
        if not column.nullable
    ]
    rules += [
        (name, code, ~predicate(pl.col(name)).fill_null(True))
        for name, code, predicate in _COLUMN_RULES
    ]
    rules += [(None, code, ~predicate().fill_null(True)) for code, predicate, _ in _ROW_RULES]
    failed = (
        rows.lazy()
        .select(*(expr.fill_null(False).alias(str(i)) for i, (_, _, expr) in enumerate(rules)))
        .collect()
    )
    found = [
        pl.DataFrame({"row": failed[str(i)].arg_true().cast(pl.Int64)}).with_columns(
            field=pl.lit(field, pl.String), reason=pl.lit(code, pl.String)
        )
        for i, (field, code, _) in enumerate(rules)
        if failed[str(i)].any()
    ]
    if not found:
        return pl.DataFrame(schema={"row": pl.Int64, "field": pl.String, "reason": pl.String})
    return pl.concat(found).unique()


def _summarise_faults(faults: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """One row per failed row of ``rows``: its reason codes and the detail of each fault.

    The detail is worded from the row itself, per (field, reason) at once: the field, its
    value, the rule and what it expects.
    """
    worded = []
    for (field, reason), group in faults.group_by("field", "reason"):
        detail = rows[group["row"]].select(
            _detail(field, reason, NULL_FIELDS in rows.columns).alias("detail")
        )
        worded.append(group.hstack(detail))
    return (
        pl.concat(worded)
        .sort("row", "reason", "detail")
        .group_by("row", maintain_order=True)
        .agg(
            reason_codes=pl.col("reason").unique(maintain_order=True),
            reason_detail=pl.col("detail").unique(maintain_order=True).str.join("; "),
        )
    )


def pandera_faults(rows: pl.DataFrame) -> pl.DataFrame:
    """The faults pandera's own validation of ``rows`` reports, in :func:`contract_faults`'
    form: the reference the one-pass judgement is tested against."""
    try:
        USAGE_EVENT_SCHEMA.validate(rows, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return pl.DataFrame(schema={"row": pl.Int64, "field": pl.String, "reason": pl.String})
    if cases.filter(pl.col("index").is_null()).height:
        raise RuntimeError(f"usage-event schema failed structurally:\n{cases}")
    return cases.select(
        row=pl.col("index").cast(pl.Int64),
        field=pl.when(pl.col("schema_context") == "Column").then(pl.col("column")),
        reason=pl.when(pl.col("check") == "not_nullable")
        .then(pl.lit("missing_required_field"))
        .otherwise(pl.col("check")),
    ).unique()


def _detail(field: str | None, reason: str, knows_nulls: bool) -> pl.Expr:
    """The quarantine detail of one fault, e.g. ``input_tokens="12.5": wrong_type, expected an
    integer or a numeric string`` or ``customer_id absent: missing_required_field, ...``.

    ``knows_nulls``: the rows have ``NULL_FIELDS``, telling a null sent from a field absent.
    """
    if field is None:
        return next(detail for code, _, detail in _ROW_RULES if code == reason)()
    col = pl.col(field)
    shown = pl.format("{}={}", pl.lit(field), _shown(col, quoted=field != "metadata"))
    if reason == "missing_required_field":
        sent_null = (
            pl.col(NULL_FIELDS).list.contains(field).fill_null(False)
            if knows_nulls
            else pl.lit(False)
        )
        shown = (
            pl.when(col.is_not_null())
            .then(shown)
            .when(sent_null)
            .then(pl.lit(f"{field}=null"))
            .otherwise(pl.lit(f"{field} absent"))
        )
    return pl.format(
        "{}: {}, expected {}", shown, pl.lit(reason), pl.lit(_EXPECTED[(field, reason)])
    )


def _shown(value: pl.Expr, quoted: bool = True) -> pl.Expr:
    """A value as a detail quotes it: in double quotes (the text it was sent as; a JSON value
    such as metadata as is), cut to ``MAX_SHOWN_CHARS`` with its length when longer."""
    q = '"' if quoted else ""
    n = value.str.len_chars()
    return (
        pl.when(n > MAX_SHOWN_CHARS)
        .then(pl.format(f"{q}{{}}...{q} ({{}} characters)", value.str.slice(0, MAX_SHOWN_CHARS), n))
        .otherwise(pl.format(f"{q}{{}}{q}", value))
    )


def to_typed(wire: pl.DataFrame) -> pl.DataFrame:
    """Convert validated wire rows to their landed types (defaults applied).

    Columns that are not wire fields (ingestion's line references) are kept, first."""
    return wire.select(_typed_exprs(wire.columns))


def _typed_exprs(columns: list[str]) -> list[pl.Expr]:
    context = (*WIRE_FIELDS, SOURCE_HOUR, NULL_FIELDS)
    exprs: list[pl.Expr] = [pl.col(c) for c in columns if c not in context]
    for name in WIRE_FIELDS:
        col = pl.col(name)
        if name == "timestamp":
            exprs.append(parse_timestamp(col).dt.replace_time_zone(None).alias("event_ts"))
        elif name in TOKEN_FIELDS:
            exprs.append(parse_count(col).alias(name))
        elif name == "attempt":
            exprs.append(parse_count(col).fill_null(1).alias(name))
        elif name == "status":
            exprs.append(col.fill_null("success").alias(name))
        else:
            exprs.append(col)
    return exprs


# ---------------------------------------------------------------------------------------------
# JSON Schema for producers, generated from the pandera schema above.

SCHEMA_PATH = Path(__file__).with_name("usage_event.schema.json")


def json_schema() -> dict:
    props: dict[str, dict] = {}
    for name in WIRE_FIELDS:
        column = USAGE_EVENT_SCHEMA.columns[name]
        stats: dict = {}
        for check in column.checks:
            stats.update(check.statistics or {})
        prop: dict = {"description": column.description}
        kind = stats.get("type")
        if kind == "integer":
            bounds = {"minimum": stats["minimum"], "exclusiveMaximum": stats["exclusive_maximum"]}
            prop["anyOf"] = [
                {"type": "integer", **bounds},
                {"type": "string", "pattern": r"^\d+$", "description": "numeric string"},
            ]
        elif kind == "object":
            prop["type"] = "object"
            prop["additionalProperties"] = {"type": "string"}
        elif "enum" in stats:
            prop["type"] = "string"
            prop["enum"] = stats["enum"]
            prop["default"] = "success"
        elif stats.get("format") == "date-time":
            prop["type"] = "string"
            prop["format"] = "date-time"
            prop["pattern"] = _RFC3339
        else:
            prop["type"] = "string"
            prop["minLength"] = 1
            prop["maxLength"] = stats["maxLength"]
            if "pattern" in stats:  # required identifiers: not blank
                prop["pattern"] = stats["pattern"]
        if name == "attempt":
            prop["default"] = 1
        props[name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "tokenbill/usage_event.schema.json",
        "title": "tokenbill usage event",
        "description": USAGE_EVENT_SCHEMA.description
        + " Generated from contracts/usage_event.py; do not edit by hand. Invariants: "
        "cached_input_tokens + cache_write_tokens <= input_tokens; reasoning_tokens <= "
        "output_tokens; cache_write_5m_tokens + cache_write_1h_tokens <= cache_write_tokens; "
        "audio_input_tokens + image_input_tokens <= input_tokens; audio_output_tokens + "
        "image_output_tokens <= output_tokens; the event's UTC hour matches its object key's hour.",
        "type": "object",
        "required": list(REQUIRED_FIELDS),
        "properties": props,
        "additionalProperties": True,
    }


def render_json_schema() -> str:
    """The published schema: the canonical event (above) and every producer shape around
    it (``contracts/shapes_schema.py``)."""
    from contracts.shapes_schema import with_producer_shapes

    return json.dumps(with_producer_shapes(json_schema()), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render_json_schema())
    print(f"wrote {SCHEMA_PATH}")
