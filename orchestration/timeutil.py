"""UTC, the pipeline's one time zone, and the one place a moment is brought into it.

Partitions, event times, windows and cursors are all UTC. Dagster hands out aware datetimes
(partition windows, run timestamps), DuckDB's ``timestamp`` columns hold naive UTC wall-clock
times, and operators type either: :func:`as_utc` and :func:`naive_utc` turn any of them into
the form the caller needs. A naive datetime is always read as UTC, never as local time.
"""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime: a naive one is taken as UTC, an aware one converted."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def naive_utc(moment: datetime) -> datetime:
    """``moment`` as a naive UTC datetime (how DuckDB's ``timestamp`` columns hold it)."""
    return as_utc(moment).replace(tzinfo=None)
