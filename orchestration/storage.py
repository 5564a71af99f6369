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

The one place tokenbill uses Dagster internals. Dagster has no public API to extend its
storage, so this module subclasses private classes and calls private methods (listed in
``INTERNALS``), and mirrors what the stock single-event write does (``MIRRORED``). That is
why the dagster family is pinned to the exact version this was tested on (``pyproject.toml``,
``TESTED_DAGSTER``) and why ``tests/test_storage.py`` fails, naming what changed, when any of
it does: after a dagster upgrade, re-read the stock methods, adjust ``_store_segment``, then
update the pin and the hashes. Production on PostgreSQL needs none of this:
``dagster-postgres`` writes a batch in one statement natively (README, "Production storage").
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Sequence
from importlib import import_module
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING

from dagster import DagsterEventType, EventLogEntry, Field, StringSource
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory

if TYPE_CHECKING:
    from dagster._serdes import ConfigurableClassData

#: The dagster release this module was written against and tested on; pyproject pins it.
TESTED_DAGSTER = "1.13.27"
_EVENT_LOG = "dagster._core.storage.event_log.sqlite.sqlite_event_log:SqliteEventLogStorage"
_STORAGE = "dagster._core.storage.sqlite_storage"
#: Private names used here -> the parameters they are called with (``None``: not called).
INTERNALS: dict[str, str | None] = {
    "dagster._core.storage.event_log.schema:SqlEventLogStorageTable": None,
    _EVENT_LOG: None,
    f"{_EVENT_LOG}.__init__": "self, base_dir, inst_data",
    f"{_EVENT_LOG}.run_connection": "self, run_id",
    f"{_EVENT_LOG}.index_transaction": "self",
    f"{_EVENT_LOG}.has_table": "self, table_name",
    f"{_EVENT_LOG}._event_to_row": "self, event",
    f"{_EVENT_LOG}._store_asset_event_tags": "self, conn, events, event_ids",
    f"{_EVENT_LOG}._store_asset_event": "self, conn, event, event_id",
    f"{_STORAGE}:DagsterSqliteStorage": None,
    f"{_STORAGE}:DagsterSqliteStorage.from_local": "base_dir, inst_data",
    f"{_STORAGE}:_event_logs_directory": "base",
}
#: The stock code ``_store_segment`` reproduces for a batch -> sha256 of its source in
#: ``TESTED_DAGSTER``: if it changes, the batched rows may no longer be the stock ones.
MIRRORED: dict[str, str] = {
    # The single-event write: a run-shard insert, then the index shard's row, tags and asset row.
    f"{_EVENT_LOG}.store_event": (
        "f89aed40602438b9bbbc885d4dca38ef3fcf6f067db70fca22dd40eca8a6e03c"
    ),
    f"{_EVENT_LOG}._event_to_row": (
        "93d47fbe7edc4f70af0df5fab8c188ad91786e0922269e0971ebdc17b0e778f4"
    ),
    f"{_EVENT_LOG}._store_asset_event_tags": (
        "85d6f17ef04b926f1714e8ea8824966230ffdd3a89e55b61a66b8ca3db0eaa2e"
    ),
    f"{_EVENT_LOG}._store_asset_event": (
        "fdb9340b9eef1c9bdbf159bcc9aaa334a029167764bc74d9cfd57c0a7d7a36af"
    ),
    # Builds the stock event log, which TokenbillSqliteStorage replaces.
    "dagster._core.storage.sqlite_storage:DagsterSqliteStorage.__init__": (
        "bcf5aa27a5dd083f7876a9ed00ca5c009a759fb41ff1df935977eec94344bd7a"
    ),
}

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


def _resolve(name: str):
    module, _, path = name.partition(":")
    target = import_module(module)
    for part in path.split("."):
        target = getattr(target, part)
    return target


def source_hash(name: str) -> str:
    return hashlib.sha256(inspect.getsource(_resolve(name)).encode()).hexdigest()


def internals_problems(
    internals: dict[str, str | None] | None = None, mirrored: dict[str, str] | None = None
) -> list[str]:
    """What changed, in the installed dagster, among the internals this module relies on
    (or those given)."""
    internals = INTERNALS if internals is None else internals
    mirrored = MIRRORED if mirrored is None else mirrored
    problems = []
    installed = package_version("dagster")
    if installed != TESTED_DAGSTER:
        problems.append(
            f"dagster {installed} is installed, this storage was tested on {TESTED_DAGSTER}"
        )
    for name, params in internals.items():
        try:
            target = _resolve(name)
        except (ImportError, AttributeError):
            problems.append(f"{name} no longer exists")
            continue
        if params is not None:
            found = ", ".join(inspect.signature(target).parameters)
            if found != params:
                problems.append(f"{name} now takes ({found}), not ({params})")
    for name, expected in mirrored.items():
        try:
            found = source_hash(name)
        except (ImportError, AttributeError, OSError, TypeError):
            problems.append(f"{name} no longer exists")
            continue
        if found != expected:
            problems.append(
                f"{name} changed (its source hash is {found[:12]}, not {expected[:12]})"
            )
    return problems
