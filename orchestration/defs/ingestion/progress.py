"""Progress lines of an ingestion run: hours landed of hours requested, and events per second.

A month's backfill ingests 744 hours in one run; these lines (Dagster log lines, which the
terminal and the UI's run log show) say how far it is while it runs. The ingestion asset
calls :meth:`IngestionProgress.observe` from its own thread as hours arrive from S3 and
batches land, and :meth:`IngestionProgress.finish` at the end. When a line is due is the
shared :class:`~orchestration.defs.progress.Progress`'s rule; this class says what a line
holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import polars as pl

from orchestration.defs.progress import Progress

#: A progress line at most this often (and after the first batch lands), plus one at the end.
PROGRESS_SECONDS = 5.0
_HOUR = "%Y-%m-%d %H:00"


class IngestionProgress(Progress):
    """Items are hours landed, the rate counts events (lines read)."""

    def __init__(
        self,
        hours: list[datetime],
        log: Callable[[str], None],
        every_seconds: float = PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        # No total: the last hour landing is said by finish(), with the run's totals.
        super().__init__(
            log, "ingestion", "hours landed", rate_unit="events", every_seconds=every_seconds,
            clock=clock,
        )  # fmt: skip
        self._hours = hours
        self._audits_seen = 0
        self.hours_read = 0
        self.totals = dict.fromkeys(
            ("lines_read", "valid_count", "duplicate_count", "quarantined_count"), 0
        )
        self.totals["unreadable_object_count"] = 0

    @property
    def hours_landed(self) -> int:
        return self.done

    def hour_read(self) -> None:
        self.hours_read += 1

    def observe(self, audits: list[pl.DataFrame]) -> None:
        """Count the batches landed since the last call (``audits`` only grows) and log a
        line when one landed for the first time or ``every_seconds`` passed since the last."""
        self.advance(*self._count(audits))

    def finish(self, audits: list[pl.DataFrame]) -> None:  # type: ignore[override]
        hours, lines = self._count(audits)
        self.done += hours
        self.counted += lines
        now = self.clock()
        t = self.totals
        span = (
            f"{self._hours[0].strftime(_HOUR)} to {self._hours[-1].strftime(_HOUR)} UTC"
            if self._hours
            else "no hours"
        )
        self.log(
            f"ingestion: {self.hours_landed}/{len(self._hours)} hours landed ({span}); "
            f"{t['lines_read']:,} events read: {t['valid_count']:,} valid, "
            f"{t['duplicate_count']:,} duplicates, {t['quarantined_count']:,} quarantined, "
            f"{t['unreadable_object_count']:,} unreadable objects; "
            f"{self.rate(now):,.0f} events/s over {now - self.started:.1f} s"
        )

    def line(self, now: float | None = None) -> str:
        n = len(self._hours)
        return (
            f"ingestion: {self.hours_landed}/{n} hours landed, {self.hours_read}/{n} read from "
            f"S3; {self.counted:,} events landed, {self.rate(now):,.0f} events/s"
        )

    def _count(self, audits: list[pl.DataFrame]) -> tuple[int, int]:
        """(hours, lines read) of the audits not counted yet; adds them to the totals."""
        hours = lines = 0
        for audit in audits[self._audits_seen : len(audits)]:
            hours += audit.height
            lines += int(audit["lines_read"].sum())
            for column in self.totals:
                self.totals[column] += int(audit[column].sum())
            self._audits_seen += 1
        return hours, lines
