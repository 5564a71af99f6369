"""Progress lines: "<label>: N of M <unit> done", throttled, the last always logged; and the
dbt build's, counted on dbt's own structured log events."""

from __future__ import annotations

from orchestration.defs.dbt.assets import count_node
from orchestration.defs.progress import Progress


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_throttled_and_the_last_item_is_always_logged():
    clock, lines = FakeClock(), []
    progress = Progress(lines.append, "ingestion", "hours", total=5, every_seconds=10, clock=clock)
    progress.advance()  # the first is logged at once
    clock.now += 3
    progress.advance()  # 3 s later: throttled
    clock.now += 8
    progress.advance()  # 11 s after the last line
    progress.advance()
    progress.advance()  # the last: logged although 0 s passed
    progress.finish()  # already reported: nothing more
    assert lines == [
        "ingestion: 1 of 5 hours done",
        "ingestion: 3 of 5 hours done",
        "ingestion: 5 of 5 hours done",
    ]


def test_a_rate_is_the_counted_items_per_second_since_the_start():
    clock, lines = FakeClock(), []
    progress = Progress(
        lines.append, "ingestion", "hours landed", total=744, rate_unit="events", clock=clock
    )
    clock.now += 4
    progress.advance(2, counted=10_000)
    assert lines == ["ingestion: 2 of 744 hours landed done, 2,500 events/s"]


def test_finish_reports_a_count_short_of_the_total():
    lines = []
    progress = Progress(lines.append, "dbt", "nodes", every_seconds=60, clock=FakeClock())
    progress.set_total(3)
    progress.advance()
    progress.advance()
    progress.finish()
    assert lines == ["dbt: 1 of 3 nodes done", "dbt: 2 of 3 nodes done"]


def _event(name: str, **data) -> dict:
    return {"info": {"name": name}, "data": data}


def test_dbt_nodes_are_counted_on_their_result_events_with_dbts_total():
    """A build of 2 models and 1 test, as dbt logs it: START lines and hooks do not count, a
    test's total is its ``num_models``."""
    lines = []
    progress = Progress(lines.append, "dbt", "nodes", every_seconds=0, clock=FakeClock())
    for event in [
        _event("MainReportVersion", version="1.11"),
        _event("LogHookStartLine", index=1, total=1),
        _event("LogHookEndLine", index=1, total=1),
        _event("LogStartLine", index=1, total=3),
        _event("LogModelResult", index=1, total=3, status="success"),
        _event("LogStartLine", index=2, total=3),
        _event("SkippingDetails", index=2, total=3),
        _event("LogStartLine", index=3, total=3),
        _event("LogTestResult", index=3, num_models=3, status="pass"),
        _event("NodeFinished", node_info={"unique_id": "test.tokenbill.x"}),
    ]:
        count_node(progress, event)
    progress.finish()
    assert lines == ["dbt: 1 of 3 nodes done", "dbt: 2 of 3 nodes done", "dbt: 3 of 3 nodes done"]
