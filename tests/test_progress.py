"""Ingestion progress lines, on a clock the test turns by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from orchestration.defs.ingestion.progress import IngestionProgress

HOURS = [datetime(2026, 10, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(48)]


def audit(hours: int, lines: int) -> pl.DataFrame:
    """``hours`` audited hours of ``lines`` lines each: 90% valid, the rest split."""
    return pl.DataFrame(
        {
            "lines_read": [lines] * hours,
            "valid_count": [lines - lines // 10] * hours,
            "duplicate_count": [lines // 20] * hours,
            "quarantined_count": [lines // 10 - lines // 20] * hours,
            "unreadable_object_count": [0] * (hours - 1) + [1],
        }
    )


def test_lines_say_hours_landed_of_requested_and_events_per_second():
    now = [0.0]
    lines: list[str] = []
    progress = IngestionProgress(HOURS, lines.append, every_seconds=5, clock=lambda: now[0])
    audits: list[pl.DataFrame] = []

    for _ in range(20):  # 20 hours read in 2 s: nothing landed, nothing to say yet
        now[0] += 0.1
        progress.hour_read()
        progress.observe(audits)
    assert lines == []

    audits.append(audit(hours=16, lines=1000))  # the first batch lands: said at once
    now[0] = 4.0
    progress.observe(audits)
    now[0] = 6.0  # under 5 s since the last line: quiet
    progress.observe(audits)
    for _ in range(28):
        progress.hour_read()
    now[0] = 9.0  # 5 s since the last line: a line, even though nothing new landed
    progress.observe(audits)
    audits.append(audit(hours=32, lines=500))
    now[0] = 10.0
    progress.finish(audits)

    assert lines == [
        "ingestion: 16/48 hours landed, 20/48 read from S3; 16,000 events landed, 4,000 events/s",
        "ingestion: 16/48 hours landed, 48/48 read from S3; 16,000 events landed, 1,778 events/s",
        "ingestion: 48/48 hours landed (2026-10-01 00:00 to 2026-10-02 23:00 UTC); "
        "32,000 events read: 28,800 valid, 1,600 duplicates, 1,600 quarantined, "
        "2 unreadable objects; 3,200 events/s over 10.0 s",
    ]
