"""Finalized invoices as a Stripe invoice-item feed a payment integration can post as-is.

One object per invoice, ``<export prefix>/period=YYYY-MM-DD/<invoice_id>.jsonl``, one line per
invoice line. Every key of a line but ``idempotency_key`` is a parameter of Stripe's
``POST /v1/invoiceitems``: ``customer`` (the ``stripe_customer_id`` of customers.yml),
integer ``amount`` in the currency's minor unit, lowercase ``currency``, ``description``,
``period`` ({start, end} in Unix seconds) and ``metadata`` (strings only, money at the
currency's scale). ``idempotency_key`` is sent as the ``Idempotency-Key`` header.

Stripe takes either ``amount`` or ``quantity`` with ``unit_amount_decimal``, never both. The
feed sends ``amount``: it is the invoice's rounding (``fct_invoice_line_items.amount``, whose
lines add up to the rounded total), which Stripe recomputing ``quantity x unit price`` per
line would not reproduce. Quantity, unit and unit price ride along in ``metadata`` (and in the
description) where the line has a unit price.

Nothing is rounded here: amounts are the mart's minor units, formatted. The bytes depend only
on the finalized lines, so a re-export rewrites identical objects and the keys never change.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import duckdb

from orchestration.warehouse import DuckDBWarehouse, WarehouseTables

EXPORT_SQL = """
select
    lines.invoice_id, lines.customer_id, customers.stripe_customer_id, lines.subscription_id,
    lines.currency, lines.minor_unit_exponent, lines.billing_period_start,
    lines.billing_period_end, lines.line_key, lines.line_type, lines.description,
    lines.quantity, lines.unit, lines.unit_price, lines.amount_minor_units,
    lines.amount_precise, lines.original_invoice_id, lines.idempotency_key,
    invoices.finalized_at, invoices.total_due
from marts.fct_invoice_line_items as lines
inner join marts.fct_invoices as invoices on lines.invoice_id = invoices.invoice_id
left join marts.dim_customers as customers on lines.customer_id = customers.customer_id
where invoices.status = 'finalized'
    and lines.billing_period_start >= ? and lines.billing_period_start < ?
order by lines.invoice_id, lines.line_key
"""

#: Unit sizes of the catalog's price units (contracts.catalog.UNITS), to express a unit price
#: per token the way Stripe's unit_amount_decimal is: minor units per unit of quantity.
_UNIT_SIZES = {"1": 1, "1K": 1_000, "1M": 1_000_000, "1B": 1_000_000_000}


def invoice_items(
    con: duckdb.DuckDBPyConnection | WarehouseTables, start: datetime, end: datetime
) -> list[tuple[str, datetime, dict]]:
    """(invoice id, period start, invoice item) for every line of the finalized invoices of
    periods starting in [start, end), in invoice and line-key order, on either engine (a
    DuckDB connection or a ``WarehouseTables``, orchestration/warehouse.py)."""
    source = DuckDBWarehouse(con) if isinstance(con, duckdb.DuckDBPyConnection) else con
    items = []
    for row in source.query(EXPORT_SQL, [start, end]).to_pylist():
        exponent = row["minor_unit_exponent"]
        metadata = {
            "invoice_id": row["invoice_id"],
            "tokenbill_customer_id": row["customer_id"],
            "subscription_id": row["subscription_id"],
            "line_key": row["line_key"],
            "line_type": row["line_type"],
            "amount": money(row["amount_minor_units"], exponent),
            "amount_precise": _plain(row["amount_precise"]),
            "invoice_total_due": money(_minor_units(row["total_due"], exponent), exponent),
            "finalized_at": row["finalized_at"].isoformat() + "Z",
        }
        if row["quantity"] is not None and row["line_type"] == "usage":
            metadata["quantity"] = str(row["quantity"])
        if row["unit_price"] is not None:
            metadata["unit"] = row["unit"]
            metadata["unit_price"] = _plain(row["unit_price"], exponent)
            metadata["unit_amount_decimal"] = _plain(
                row["unit_price"] * 10**exponent / _UNIT_SIZES[row["unit"]]
            )
        if row["original_invoice_id"]:
            metadata["original_invoice_id"] = row["original_invoice_id"]
        item = {
            "idempotency_key": row["idempotency_key"],
            "customer": row["stripe_customer_id"],
            "amount": row["amount_minor_units"],
            "currency": row["currency"].lower(),
            "description": row["description"],
            "period": {
                "start": _unix(row["billing_period_start"]),
                "end": _unix(row["billing_period_end"]),
            },
            "metadata": metadata,
        }
        items.append((row["invoice_id"], row["billing_period_start"], item))
    return items


def invoice_documents(
    con: duckdb.DuckDBPyConnection | WarehouseTables, start: datetime, end: datetime, prefix: str
) -> dict[str, bytes]:
    """S3 key -> JSON Lines bytes, for the finalized invoices of periods in [start, end)."""
    documents: dict[str, list[str]] = {}
    for invoice_id, period_start, item in invoice_items(con, start, end):
        key = export_key(prefix, period_start, invoice_id)
        documents.setdefault(key, []).append(
            json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        )
    return {k: ("\n".join(v) + "\n").encode() for k, v in documents.items()}


def export_key(prefix: str, period_start: datetime, invoice_id: str, suffix: str = "jsonl") -> str:
    return f"{prefix.strip('/')}/period={period_start:%Y-%m-%d}/{invoice_id}.{suffix}"


def money(minor_units: int, exponent: int) -> str:
    """Whole minor units as a decimal string at the currency's scale: 488, 2 -> '4.88'."""
    return str(Decimal(minor_units).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent)))


def _minor_units(amount: Decimal, exponent: int) -> int:
    """A mart amount already in whole minor units, as an integer (exact; never rounds)."""
    units = amount.scaleb(exponent)
    if units != units.to_integral_value():
        raise ValueError(f"{amount} is not in whole minor units of exponent {exponent}")
    return int(units)


def _plain(value: Decimal, min_decimals: int = 0) -> str:
    """An exact decimal without trailing zeros (but at least ``min_decimals``), never in
    exponent notation: 0.001500000000000000 -> '0.0015', 15.000, 2 -> '15.00'."""
    text = format(value.normalize(), "f")
    whole, _, frac = text.partition(".")
    frac = frac.ljust(min_decimals, "0")
    return f"{whole}.{frac}" if frac else whole


def _unix(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp())
