"""``billing/wallet_ledger`` (monthly partitions): the prepaid-wallet ledger.

Each month run draws the month's hourly charges down the wallets' grants with the rules of
:mod:`orchestration.defs.wallets.ledger` and replaces exactly that month's entries
(``entry_ts`` in the month) of ``billing.wallet_ledger`` in one transaction. Its inputs are
the dbt view ``marts.int_wallets__draw_inputs`` and nothing else, plus the state the earlier
months left in the ledger itself, so months are booked in order: a ranged backfill is one run
that books its months one after the other.

The pieces, one module each: the table (:mod:`.ledger_table`), booking a month
(:mod:`.booking`), the blocking checks (:mod:`.ledger_checks`) and the run's metadata
(:mod:`.ledger_metadata`); this module is the asset that puts them together.
"""

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    asset,
)

from orchestration.defs.partitions import monthly_partitions
from orchestration.defs.resources import WAREHOUSE_POOL, Warehouse
from orchestration.defs.wallets.booking import LedgerInputError, book_month, months_of
from orchestration.defs.wallets.ledger_checks import CHECKS, run_checks
from orchestration.defs.wallets.ledger_metadata import ledger_metadata
from orchestration.defs.wallets.ledger_table import (
    INPUTS_KEY,
    LEDGER_DDL,
    LEDGER_KEY,
    LEDGER_TABLE,
    empty_ledger,
)
from orchestration.timeutil import naive_utc

OWNERS = ["team:billing"]


@asset(
    key=LEDGER_KEY,
    description=(
        "The prepaid-wallet ledger (billing.wallet_ledger): every grant, auto top-up, "
        "deduction, reversal and expiry of every wallet, with the grant's remainder and the "
        "wallet balance after it. Each monthly partition draws the month's hourly charges "
        "down the wallets' grants in the draw order of int_wallets__draw_inputs, gives credit "
        "back (reversal) for negative hours, and replaces exactly the month's entries in one "
        "transaction. What credits cannot cover stays due on the invoice (overage)."
    ),
    deps=[
        INPUTS_KEY,
        AssetKey(["catalog", "wallets"]),
        AssetKey(["catalog", "wallet_grants"]),
    ],
    partitions_def=monthly_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="wallets",
    kinds={"python", "duckdb"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    check_specs=[
        # Blocking: a ledger that does not reconcile must not reach the invoices.
        AssetCheckSpec(name, asset=LEDGER_KEY, description=d, blocking=True)
        for name, d in CHECKS.items()
    ],
)
def wallet_ledger(context: AssetExecutionContext, warehouse: Warehouse):
    window = context.partition_time_window
    start, end = naive_utc(window.start), naive_utc(window.end)
    months = []
    with warehouse.tables() as con:
        con.ensure_table(LEDGER_TABLE, LEDGER_DDL, empty_ledger())
        try:
            # One transaction on DuckDB; on Spark each month is replaced on its own, in order
            # (a failure leaves the earlier months booked, which a re-run replaces).
            with con.transaction():
                for month_start, month_end in months_of(start, end):
                    months.append(book_month(con, month_start, month_end))
        except LedgerInputError as exc:
            raise Failure(description=str(exc)) from None
        checks = run_checks(con, until=end)
    metadata = ledger_metadata(months)
    context.log.info(f"booked {metadata['dagster/row_count']} ledger entries for {start:%Y-%m}")
    yield MaterializeResult(asset_key=LEDGER_KEY, metadata=metadata)
    yield from checks
