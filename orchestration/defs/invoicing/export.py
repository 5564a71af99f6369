"""Finalized invoices as JSON Lines a payment-provider integration can send as-is.

One object per invoice, ``<export prefix>/period=YYYY-MM-DD/<invoice_id>.jsonl``, one line per
invoice line, shaped like a Stripe invoice item: integer ``amount`` in the currency's minor
unit, lowercase ``currency``, ``customer``, ``description``, ``period``, ``metadata``, and a
stable ``idempotency_key`` (md5 of invoice id and line key). The bytes depend only on the
finalized lines, so a re-export rewrites identical objects and the keys never change: an
integration that forwards the key never charges a line twice.
"""

from __future__ import annotations

import json
from datetime import datetime

import duckdb

EXPORT_SQL = """
select
    lines.invoice_id, lines.customer_id, lines.subscription_id, lines.currency,
    lines.billing_period_start, lines.billing_period_end, lines.line_key, lines.line_type,
    lines.description, lines.quantity, lines.amount_minor_units,
    cast(lines.amount_precise as varchar) as amount_precise,
    cast(lines.amount as varchar) as amount, lines.original_invoice_id, lines.idempotency_key,
    invoices.finalized_at, cast(invoices.total_due as varchar) as invoice_total_due
from marts.fct_invoice_line_items as lines
inner join marts.fct_invoices as invoices on lines.invoice_id = invoices.invoice_id
where invoices.status = 'finalized'
    and lines.billing_period_start >= ? and lines.billing_period_start < ?
order by lines.invoice_id, lines.line_key
"""


def invoice_documents(
    con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, prefix: str
) -> dict[str, bytes]:
    """S3 key -> JSON Lines bytes, for the finalized invoices of periods in [start, end)."""
    rows = con.execute(EXPORT_SQL, [start, end]).fetchall()
    columns = [d[0] for d in con.description]
    documents: dict[str, list[str]] = {}
    for values in rows:
        row = dict(zip(columns, values, strict=True))
        item = {
            "idempotency_key": row["idempotency_key"],
            "customer": row["customer_id"],
            "currency": row["currency"].lower(),
            "amount": row["amount_minor_units"],
            "description": row["description"],
            "period": {
                "start": int(_utc_epoch(row["billing_period_start"])),
                "end": int(_utc_epoch(row["billing_period_end"])),
            },
            "metadata": {
                "invoice_id": row["invoice_id"],
                "subscription_id": row["subscription_id"],
                "line_key": row["line_key"],
                "line_type": row["line_type"],
                "quantity": "" if row["quantity"] is None else str(row["quantity"]),
                "amount_precise": row["amount_precise"],
                "amount_rounded": row["amount"],
                "original_invoice_id": row["original_invoice_id"] or "",
                "finalized_at": row["finalized_at"].isoformat() + "Z",
                "invoice_total_due": row["invoice_total_due"],
            },
        }
        key = export_key(prefix, row["billing_period_start"], row["invoice_id"])
        documents.setdefault(key, []).append(
            json.dumps(item, sort_keys=True, separators=(",", ":"))
        )
    return {k: ("\n".join(v) + "\n").encode() for k, v in documents.items()}


def export_key(prefix: str, period_start: datetime, invoice_id: str) -> str:
    return f"{prefix.strip('/')}/period={period_start:%Y-%m-%d}/{invoice_id}.jsonl"


def _utc_epoch(moment: datetime) -> float:
    from datetime import UTC

    return moment.replace(tzinfo=UTC).timestamp()
