"""Dagster instance storage: Dagster's SQLite storage, writing batches of asset events at once.

Why it exists. A month's backfill is one run over 744 hourly partitions of five assets, and
Dagster records an ``ASSET_MATERIALIZATION_PLANNED`` and an ``ASSET_MATERIALIZATION`` event per
asset partition: about 7,500 events. The stock ``SqliteEventLogStorage`` writes every event on
its own: a new SQLAlchemy engine (so no compiled-statement cache), a connection to the run's
shard, a commit, then a second engine and connection for the cross-run index, a third for a
``has_table`` probe, each closed with a WAL checkpoint. That is 15-30 ms per event, 2-4
minutes of a month's backfill that do not depend on the data at all.

Dagster already groups these events: with ``DAGSTER_EVENT_BATCH_SIZE`` set (what Dagster+ and
``dagster-postgres`` use), the planned events of a run and the per-partition materializations
of a step reach the storage as one ``store_event_batch`` call. The SQLite storage implements
that call as a loop of single writes. :class:`BatchingSqliteEventLogStorage` writes a batch of
asset events in one transaction per database instead: the same rows, in the same order, as
the single-event path (run shard, then the index shard with its asset-key row and indexed
tags per event). Anything else (run, step and check events, a batch mixing run ids) takes the
stock per-event path.

Use it from ``dagster.yaml`` (``orchestration/dagster.yaml`` does)::

    storage:
      custom:
        module: orchestration.storage
        class: TokenbillSqliteStorage
        config: {}            # base_dir defaults to $DAGSTER_HOME/storage, like Dagster's

Loading the storage sets ``DAGSTER_EVENT_BATCH_SIZE`` (unless already set) in the process that
loads it: the webserver and the daemon (they create runs and their planned events), the run
worker, and any process calling ``execute_in_process`` on the instance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dagster import DagsterEventType
from dagster._config import Field, StringSource
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData

#: Events per batch Dagster hands to the storage; a month of hourly partitions fits in one.
EVENT_BATCH_SIZE = "1000"
#: Asset events that go into the run shard and the index shard only (no check or run status).
BATCHED_EVENT_TYPES = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_OBSERVATION,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    }
)


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose ``store_event_batch`` writes asset events in bulk."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data=inst_data)
        self._tables_seen: set[str] = set()
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)

    def has_table(self, table_name: str) -> bool:
        # The stock probe opens a new engine per call, once per asset event with tags; tables
        # are never dropped under a running instance, so a table seen once stays seen.
        if table_name in self._tables_seen:
            return True
        found = super().has_table(table_name)
        if found:
            self._tables_seen.add(table_name)
        return found

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Store consecutive batchable asset events of one run in bulk, others one by one."""
        segment: list[EventLogEntry] = []
        for event in events:
            if _batchable(event) and (not segment or segment[0].run_id == event.run_id):
                segment.append(event)
                continue
            self._store_segment(segment)
            segment = []
            if _batchable(event):
                segment.append(event)
            else:
                self.store_event(event)
        self._store_segment(segment)

    def _store_segment(self, events: list[EventLogEntry]) -> None:
        if len(events) <= 1:
            for event in events:
                self.store_event(event)
            return
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        # Mirror into the cross-run index exactly as store_event does, one transaction for all.
        with self.index_transaction() as conn:
            for event, row in zip(events, rows, strict=True):
                event_id = conn.execute(
                    SqlEventLogStorageTable.insert().values(**row)
                ).inserted_primary_key[0]
                self._store_asset_event_tags(conn, [event], [event_id])
                self._store_asset_event(conn, event, event_id)


def _batchable(event: EventLogEntry) -> bool:
    dagster_event = event.dagster_event
    return (
        dagster_event is not None
        and dagster_event.event_type in BATCHED_EVENT_TYPES
        and dagster_event.asset_key is not None
    )


class TokenbillSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (runs, schedules, event log in ``base_dir``) with the batching
    event log above. Same files and schema as the stock storage: an existing instance switches
    to it (or back) as it is."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage = BatchingSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def config_type(cls):
        return {
            "base_dir": Field(
                StringSource,
                is_required=False,
                description="Directory of the SQLite files; default $DAGSTER_HOME/storage.",
            )
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        base_dir = config_value.get("base_dir")
        if not base_dir:
            home = os.environ.get("DAGSTER_HOME")
            if not home:
                raise RuntimeError(
                    "TokenbillSqliteStorage needs base_dir in dagster.yaml or DAGSTER_HOME set"
                )
            base_dir = os.path.join(home, "storage")
        return cls.from_local(base_dir, inst_data=inst_data)
