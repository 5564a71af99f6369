"""Progress lines for long steps: "<label>: N of M <unit> done", as Dagster log lines.

A month's backfill is one run per grain, and each of its steps works for a minute or more: the
terminal (``dagster dev``, the daemon, the demo) and the run's log in the UI show how far it
got. Lines are throttled (at most one per ``every_seconds``) so a backfill of thousands of
items writes a few dozen events, and the last item is always reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Counts items done of a total and logs "<label>: N of M <unit> done[, R <rate_unit>/s]".

    ``log`` is e.g. ``context.log.info``. ``total`` may be learnt late (``set_total``): dbt
    says how many nodes it runs only when it starts the first.
    """

    def __init__(
        self,
        log: Callable[[str], None],
        label: str,
        unit: str,
        total: int | None = None,
        rate_unit: str | None = None,
        every_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.log, self.label, self.unit, self.total = log, label, unit, total
        self.rate_unit, self.every_seconds, self.clock = rate_unit, every_seconds, clock
        self.done = 0
        self.counted = 0  # what the rate counts (e.g. events), beside the items
        self.started = clock()
        self._last_logged: float | None = None
        self._reported: tuple[int, int | None] | None = None

    def set_total(self, total: int) -> None:
        self.total = total

    def advance(self, items: int = 1, counted: int = 0) -> None:
        """``items`` more done (and ``counted`` more of what the rate measures)."""
        self.done += items
        self.counted += counted
        now = self.clock()
        last = self.total is not None and self.done >= self.total
        if last or self._last_logged is None or now - self._last_logged >= self.every_seconds:
            self._emit(now)

    def finish(self) -> None:
        """Log the final count unless it is the line already logged."""
        if self._reported != (self.done, self.total):
            self._emit(self.clock())

    def line(self, now: float | None = None) -> str:
        total = "?" if self.total is None else f"{self.total:,}"
        text = f"{self.label}: {self.done:,} of {total} {self.unit} done"
        if self.rate_unit:
            elapsed = max((self.clock() if now is None else now) - self.started, 1e-9)
            text += f", {self.counted / elapsed:,.0f} {self.rate_unit}/s"
        return text

    def _emit(self, now: float) -> None:
        self.log(self.line(now))
        self._last_logged = now
        self._reported = (self.done, self.total)
