"""Progress lines for long steps, as Dagster log lines: one helper for every step.

A month's backfill is one run per grain, and each of its steps works for a minute or more: the
terminal (``dagster dev``, the daemon, the demo) and the run's log in the UI show how far it
got. :class:`Progress` counts items done (and what a rate counts, e.g. events) and decides when
a line is due: at once when the first item is done, then at most one per ``every_seconds``
(since the start while nothing was said), and always for the last item, so a backfill of
thousands of items writes a few dozen events. Its line is "<label>: N of M <unit> done[, R
<rate_unit>/s]" (the dbt build's); a step with more to say overrides :meth:`Progress.line`
(ingestion's, in ``defs/ingestion/progress.py``).
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
        """``items`` more done (and ``counted`` more of what the rate measures); log a line if
        one is due. ``advance(0)`` only lets the clock speak."""
        self.done += items
        self.counted += counted
        now = self.clock()
        if self._due(now):
            self._emit(now)

    def finish(self) -> None:
        """Log the final count unless it is the line already logged."""
        if self._reported != (self.done, self.total):
            self._emit(self.clock())

    def rate(self, now: float | None = None) -> float:
        """What the rate counts, per second since the start (0 before any time passed)."""
        elapsed = (self.clock() if now is None else now) - self.started
        return self.counted / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        total = "?" if self.total is None else f"{self.total:,}"
        text = f"{self.label}: {self.done:,} of {total} {self.unit} done"
        if self.rate_unit:
            text += f", {self.rate(now):,.0f} {self.rate_unit}/s"
        return text

    def _due(self, now: float) -> bool:
        """The last item, the first item done (even after lines that said nothing was done
        yet), or ``every_seconds`` since the last line (since the start before any)."""
        last = self.total is not None and self.done >= self.total
        first = self.done > 0 and (self._reported is None or self._reported[0] == 0)
        since = self.started if self._last_logged is None else self._last_logged
        return last or first or now - since >= self.every_seconds

    def _emit(self, now: float) -> None:
        self.log(self.line(now))
        self._last_logged = now
        self._reported = (self.done, self.total)
