"""``billing.wallet_ledger``: the table the wallet ledger asset writes, declared once.

:data:`LEDGER_SCHEMA` is the table: its columns (in order), their types, and from them the DDL
(:data:`LEDGER_DDL`). The dbt source ``billing.wallet_ledger`` and the view
``fct_wallet_ledger`` read it.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from dagster import AssetKey

from orchestration.defs.tables import MONEY, create_table_ddl

LEDGER_TABLE = "billing.wallet_ledger"
LEDGER_KEY = AssetKey(["billing", "wallet_ledger"])
#: The dbt view that is the ledger's only input (with the ledger's own earlier months).
INPUTS = "marts.int_wallets__draw_inputs"
INPUTS_KEY = AssetKey(["marts", "int_wallets__draw_inputs"])

LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "entry_id": pl.String,
    "wallet_id": pl.String,
    "customer_id": pl.String,
    "currency": pl.String,
    "grant_id": pl.String,
    "grant_kind": pl.String,
    "entry_type": pl.String,
    "entry_ts": pl.Datetime("us"),
    "entry_order": pl.Int32,
    "usage_hour": pl.Datetime("us"),
    "billing_period_start": pl.Datetime("us"),
    "amount": MONEY,
    "grant_remaining_after": MONEY,
    "wallet_balance_after": MONEY,
}
LEDGER_COLUMNS = list(LEDGER_SCHEMA)
LEDGER_DDL = (
    create_table_ddl(LEDGER_TABLE, LEDGER_SCHEMA, nullable=["usage_hour"])
    # Ledgers booked before entry_order existed: re-run their months to number the entries.
    + f"alter table {LEDGER_TABLE} add column if not exists entry_order integer;\n"
)


def empty_ledger() -> pa.Table:
    """No entries, with the table's columns and types (the Spark lake table's first file)."""
    return pl.DataFrame(schema=LEDGER_SCHEMA).to_arrow()


#: The order entries were booked in (ledger.py numbers them within an instant).
LEDGER_ORDER = "entry_ts, entry_order"
LEDGER_ORDER_DESC = "entry_ts desc, entry_order desc"
