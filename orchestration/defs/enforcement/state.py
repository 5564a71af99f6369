"""The enforcement file: what a gateway must block, as of an hour.

tokenbill is a batch system; a gateway (LiteLLM, an API proxy) enforces. After every hourly
run, ``enforcement_file`` publishes one JSON object per environment
(``TOKENBILL_ENFORCEMENT_KEY``, e.g. ``enforcement/production.json``) listing every customer
that must be blocked:

- ``hard_limit``: a hard quota limit (``limits`` in plans.yml / overrides.yml) whose usage in
  the current billing period reached its max (``marts.fct_quota_usage``);
- ``out_of_credit``: a prepaid wallet with ``allow_overage: false`` (wallets.yml) whose
  estimated credit is at or below zero.

Format (``schema`` ``tokenbill.enforcement/v1``; keys sorted, amounts as decimal strings)::

    {
      "schema": "tokenbill.enforcement/v1",
      "as_of": "2026-10-05T13:00:00Z",      # usage rated through this instant (exclusive)
      "count": 1,                           # len(blocked)
      "checksum": "sha256:...",             # sha256 of the canonical JSON of `blocked`
      "blocked": [
        {"customer_id": "cus_a", "reason": "hard_limit", "subscription_id": "sub_a",
         "limit_id": "tokens", "metric": "tokens", "model": null, "feature": null,
         "max": "1500", "used": "2000", "billing_period_start": "2026-10-01T00:00:00Z",
         "billing_period_end": "2026-11-01T00:00:00Z", "reached_hour": "2026-10-05T02:00:00Z"},
        {"customer_id": "cus_b", "reason": "out_of_credit", "wallet_id": "wal_b",
         "currency": "USD", "credit": "-1.5"}
      ]
    }

``model`` (a pattern with ``*``) and ``feature`` narrow a hard limit to the calls they match
(null: every call); ``out_of_credit`` blocks every call. The object is written by one PUT of
the complete body, so a reader sees the previous version or the new one, never a mix; a
reader checks ``count`` and ``checksum`` against ``blocked`` before trusting it
(``examples/gateway_hook.py``).

The estimated credit: the wallet's balance after its last booked ledger entry (the ledger is
booked at each month's close), plus the grants granted since, less the charges rated since.
Expiries since the last booking are not subtracted, so the estimate errs toward not blocking
until the close books them.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from decimal import Decimal

import duckdb

from orchestration.warehouse import WarehouseTables, as_tables

#: A DuckDB connection or the warehouse operations on either engine (orchestration/warehouse.py).
Connection = duckdb.DuckDBPyConnection | WarehouseTables

SCHEMA = "tokenbill.enforcement/v1"

HARD_LIMITS_SQL = """
select
    customer_id, subscription_id, limit_id, metric, model, feature, max_value, used,
    billing_period_start, billing_period_end, reached_hour
from marts.fct_quota_usage
where enforcement = 'hard' and is_reached
    and billing_period_start <= ? and ? < billing_period_end
order by customer_id, limit_id
"""

#: Wallets without overage and their estimated credit (see the module docstring).
OUT_OF_CREDIT_SQL = """
with
booked as (
    -- nothing booked: from the start of time (a literal both DuckDB and Spark read)
    select coalesce(max(entry_ts), timestamp '0001-01-01 00:00:00') as booked_through
    from {ledger}
),
last_entry as (
    select wallet_id, wallet_balance_after as balance
    from {ledger}
    qualify row_number() over (
        partition by wallet_id order by entry_ts desc, entry_order desc
    ) = 1
),
wallets as (
    select * from catalog.wallets where not allow_overage
),
granted_since as (
    select grants.wallet_id, sum(grants.amount) as amount
    from catalog.wallet_grants as grants, booked
    where grants.granted_at > booked.booked_through and grants.granted_at < ?
    group by grants.wallet_id
),
charged_since as (
    select rated.customer_id, sum(rated.amount) as amount
    from marts.fct_rated_charges_hourly as rated, booked
    where rated.usage_hour > booked.booked_through and rated.usage_hour < ?
        and rated.customer_id in (select customer_id from wallets)
    group by rated.customer_id
)
select
    wallets.customer_id, wallets.wallet_id, wallets.currency,
    coalesce(last_entry.balance, 0) + coalesce(granted_since.amount, 0)
    - coalesce(charged_since.amount, 0) as credit
from wallets
left join last_entry on wallets.wallet_id = last_entry.wallet_id
left join granted_since on wallets.wallet_id = granted_since.wallet_id
left join charged_since on wallets.customer_id = charged_since.customer_id
where coalesce(last_entry.balance, 0) + coalesce(granted_since.amount, 0)
    - coalesce(charged_since.amount, 0) <= 0
order by wallets.customer_id
"""

#: Where the hourly marts end: the state is as of the later of this and the run's window end.
LAST_RATED_SQL = "select max(usage_hour) from marts.fct_token_usage_hourly"


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def as_of_hour(con: Connection, window_end: datetime | None) -> datetime:
    """The instant the state holds at: the end of the last rated hour, or the run's window end
    where that is later (an hour without usage still moves the file on)."""
    last = as_tables(con).rows(LAST_RATED_SQL)[0][0]
    candidates = [t for t in (last and last + timedelta(hours=1), window_end) if t is not None]
    if not candidates:
        raise ValueError("nothing is rated yet: run hourly_usage_job for an hour first")
    return max(candidates)


def blocked_entries(con: Connection, as_of: datetime) -> list[dict]:
    """Every customer/limit to block as of ``as_of``: hard limits reached in the billing
    period of the last hour before it, then wallets out of credit without overage."""
    con = as_tables(con)
    entries = []
    last_hour = as_of - timedelta(hours=1)
    for row in con.rows(HARD_LIMITS_SQL, [last_hour, last_hour]):
        customer, subscription, limit, metric, model, feature, cap, used, start, end, hour = row
        entries.append(
            {
                "customer_id": customer,
                "reason": "hard_limit",
                "subscription_id": subscription,
                "limit_id": limit,
                "metric": metric,
                "model": model,
                "feature": feature,
                "max": _text(cap),
                "used": _text(used),
                "billing_period_start": _text(start),
                "billing_period_end": _text(end),
                "reached_hour": _text(hour),
            }
        )
    if con.relation_exists("catalog", "wallets"):
        ledger = (
            "billing.wallet_ledger"
            if con.relation_exists("billing", "wallet_ledger")
            else "(select cast(null as string) as wallet_id, cast(null as timestamp) as "
            "entry_ts, cast(null as integer) as entry_order, cast(null as decimal(38, 18)) as "
            "wallet_balance_after where false)"
        )
        sql = OUT_OF_CREDIT_SQL.format(ledger=ledger)
        for customer, wallet, currency, credit in con.rows(sql, [as_of, as_of]):
            entries.append(
                {
                    "customer_id": customer,
                    "reason": "out_of_credit",
                    "wallet_id": wallet,
                    "currency": currency,
                    "credit": _text(credit),
                }
            )
    return entries


def checksum(blocked: list[dict]) -> str:
    """sha256 of the canonical JSON of ``blocked`` (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(blocked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def enforcement_document(con: Connection, window_end: datetime | None) -> bytes:
    """The complete enforcement file body (deterministic: same warehouse, same bytes)."""
    as_of = as_of_hour(con, window_end)
    blocked = blocked_entries(con, as_of)
    document = {
        "schema": SCHEMA,
        "as_of": _text(as_of),
        "count": len(blocked),
        "checksum": checksum(blocked),
        "blocked": blocked,
    }
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()
