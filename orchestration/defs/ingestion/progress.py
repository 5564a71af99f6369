"""Progress lines of an ingestion run: hours landed of hours requested, and events per second.

A month's backfill ingests 744 hours in one run; these lines (Dagster log lines, which the
terminal and the UI's run log show) say how far it is while it runs. The ingestion asset
calls :meth:`IngestionProgress.observe` from its own thread as hours arrive from S3 and
batches land, and :meth:`IngestionProgress.finish` at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import polars as pl

#: A progress line at most this often (and after the first batch lands), plus one at the end.
PROGRESS_SECONDS = 5.0
_HOUR = "%Y-%m-%d %H:00"


class IngestionProgress:
    def __init__(
        self,
        hours: list[datetime],
        log: Callable[[str], None],
        every_seconds: float = PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._hours = hours
        self._log = log
        self._every = every_seconds
        self._clock = clock
        self._started = self._last_line = clock()
        self._audits_seen = 0
        self.hours_read = 0
        self.hours_landed = 0
        self.totals = dict.fromkeys(
            ("lines_read", "valid_count", "duplicate_count", "quarantined_count"), 0
        )
        self.totals["unreadable_object_count"] = 0

    def hour_read(self) -> None:
        self.hours_read += 1

    def observe(self, audits: list[pl.DataFrame]) -> None:
        """Count the batches landed since the last call (``audits`` only grows) and log a
        line when one landed for the first time or ``every_seconds`` passed since the last."""
        first = self.hours_landed == 0
        self._count(audits)
        now = self._clock()
        if (first and self.hours_landed) or now - self._last_line >= self._every:
            self._last_line = now
            self._log(self._line(now))

    def finish(self, audits: list[pl.DataFrame]) -> None:
        self._count(audits)
        now = self._clock()
        t = self.totals
        span = (
            f"{self._hours[0].strftime(_HOUR)} to {self._hours[-1].strftime(_HOUR)} UTC"
            if self._hours
            else "no hours"
        )
        self._log(
            f"ingestion: {self.hours_landed}/{len(self._hours)} hours landed ({span}); "
            f"{t['lines_read']:,} events read: {t['valid_count']:,} valid, "
            f"{t['duplicate_count']:,} duplicates, {t['quarantined_count']:,} quarantined, "
            f"{t['unreadable_object_count']:,} unreadable objects; "
            f"{self._rate(now):,} events/s over {now - self._started:.1f} s"
        )

    def _count(self, audits: list[pl.DataFrame]) -> None:
        for audit in audits[self._audits_seen : len(audits)]:
            self.hours_landed += audit.height
            for column in self.totals:
                self.totals[column] += int(audit[column].sum())
            self._audits_seen += 1

    def _rate(self, now: float) -> int:
        elapsed = now - self._started
        return round(self.totals["lines_read"] / elapsed) if elapsed > 0 else 0

    def _line(self, now: float) -> str:
        n = len(self._hours)
        return (
            f"ingestion: {self.hours_landed}/{n} hours landed, {self.hours_read}/{n} read from "
            f"S3; {self.totals['lines_read']:,} events landed, {self._rate(now):,} events/s"
        )
