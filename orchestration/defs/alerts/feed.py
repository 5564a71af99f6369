"""The alerts feed: every row of ``marts.fct_billing_alerts`` exported to S3 exactly once.

A webhook sender (or any subscriber) reads the feed's objects, JSON Lines, one alert a line,
``<TOKENBILL_ALERTS_PREFIX>/alerted_from=YYYY-MM-DD/<batch>.jsonl``. A line holds every
column of the alert (money and thresholds as exact decimal strings, times as UTC ISO 8601
with ``Z``); ``alert_id`` is stable across rebuilds (see fct_billing_alerts) and is the
idempotency key to deliver on.

Once: ``billing.exported_alerts`` is the append-only record of the ids exported (with the
instant and the object). An export selects the alerts not in it, writes them as one object
and records their ids in the same DuckDB transaction; if the write fails nothing is recorded
and the next export retries them. The object's key and bytes depend only on its alerts (no
run time), so a run that dies after the write and before the commit writes the same object
again next time instead of a second copy (unless new alerts joined the batch meanwhile: the
subscriber deduplicates on alert_id). Generic over the mart's rows: a new alert type is
exported without a change here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import duckdb
import pyarrow as pa

from orchestration.warehouse import WarehouseTables, as_tables

EXPORTED_DDL = """
create schema if not exists billing;
create table if not exists billing.exported_alerts (
    alert_id varchar primary key,
    exported_at timestamp not null,
    object_key varchar not null
);
"""

NEW_ALERTS_SQL = """
select alerts.*
from marts.fct_billing_alerts as alerts
anti join billing.exported_alerts as exported on alerts.alert_id = exported.alert_id
order by alerts.alerted_at, alerts.alert_id
"""


@dataclass(frozen=True)
class Batch:
    key: str
    body: bytes
    alert_ids: list[str]
    by_type: dict[str, int]


def new_alerts(con: duckdb.DuckDBPyConnection | WarehouseTables) -> list[dict]:
    """The alerts of fct_billing_alerts whose id was never exported, oldest first."""
    return as_tables(con).query(NEW_ALERTS_SQL).to_pylist()


def alert_line(alert: dict) -> str:
    """One alert as a JSON line: sorted keys, decimals as exact strings, UTC times with Z."""
    return json.dumps(
        {k: _json_value(v) for k, v in alert.items()},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def batch(alerts: list[dict], prefix: str) -> Batch:
    """The object holding ``alerts``: its key depends only on their ids."""
    ids = [a["alert_id"] for a in alerts]
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:20]
    first = min(a["alerted_at"] for a in alerts)
    key = f"{prefix.strip('/')}/alerted_from={first:%Y-%m-%d}/{digest}.jsonl"
    by_type: dict[str, int] = {}
    for a in alerts:
        by_type[a["alert_type"]] = by_type.get(a["alert_type"], 0) + 1
    body = "".join(alert_line(a) + "\n" for a in alerts).encode()
    return Batch(key=key, body=body, alert_ids=ids, by_type=by_type)


def export_new_alerts(
    con: duckdb.DuckDBPyConnection | WarehouseTables, put, prefix: str, now: datetime
):
    """Export the alerts not exported yet as one object (``put(key, body)``) and record their
    ids, all or nothing. Returns the Batch, or None when there is nothing new."""
    con = as_tables(con)
    con.ensure_table("billing.exported_alerts", EXPORTED_DDL, exported_rows([], now, ""))
    # One transaction on DuckDB (the object is put before the ids are committed); on Spark
    # the ids are written after the put: a failed put records nothing.
    with con.transaction():
        alerts = new_alerts(con)
        if not alerts:
            return None
        written = batch(alerts, prefix)
        if con.engine == "spark":
            put(written.key, written.body)
        con.replace_where(
            "billing.exported_alerts",
            "false",
            [],
            exported_rows(written.alert_ids, now, written.key),
        )
        if con.engine != "spark":
            put(written.key, written.body)
    return written


def exported_rows(alert_ids: list[str], now: datetime, key: str) -> pa.Table:
    """Rows of ``billing.exported_alerts``: the ids exported at ``now`` in object ``key``."""
    return pa.table(
        {
            "alert_id": pa.array(alert_ids, pa.string()),
            "exported_at": pa.array([now] * len(alert_ids), pa.timestamp("us")),
            "object_key": pa.array([key] * len(alert_ids), pa.string()),
        }
    )


def _json_value(value):
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat() + "Z"
    return value
