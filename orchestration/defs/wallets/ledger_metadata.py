"""The wallet ledger asset's materialization metadata: entries by type, totals per currency,
and each wallet's balance at the end of the booked months."""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal

from dagster import MetadataValue

from orchestration.defs.wallets.ledger import ENTRY_TYPES, ZERO


def _money(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


def ledger_metadata(months: list[dict]) -> dict:
    """The metadata of a run that booked ``months`` (the summaries of ``book_month``)."""
    by_type: Counter = Counter()
    totals: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(lambda: ZERO))
    last: dict[str, tuple] = {}
    for month in months:
        for e in month["entries"]:
            by_type[e.entry_type] += 1
        for wallet_id, (spec, result) in month["results"].items():
            overage = sum(result.overage.values(), ZERO)
            for name, value in (
                ("deducted", result.deducted),
                ("reversed", result.reversed),
                ("credits_used", result.credits_used),
                ("overage", overage),
            ):
                totals[name][spec.currency] += value
            prev = last.get(wallet_id)
            last[wallet_id] = (
                spec,
                result,
                (prev[2] if prev else ZERO) + result.credits_used,
                (prev[3] if prev else ZERO) + overage,
            )
    balances = (
        "| wallet | customer | currency | balance at end | credits used | overage | top-ups |\n"
    )
    balances += "|---|---|---|---|---|---|---|\n" + "\n".join(
        f"| {w} | {spec.customer_id} | {spec.currency} | {_money(r.balance)} | "
        f"{_money(d)} | {_money(o)} | {sum(1 for e in r.entries if e.entry_type == 'top_up')} |"
        for w, (spec, r, d, o) in sorted(last.items())
    )
    return {
        "entries_by_type": {t: by_type.get(t, 0) for t in ENTRY_TYPES},
        **{
            f"total_{name}" if name != "overage" else name: {
                c: _money(v) for c, v in sorted(totals[name].items())
            }
            for name in ("deducted", "reversed", "credits_used", "overage")
        },
        "balances_at_month_end": MetadataValue.md(balances),
        "later_rows_to_rebook": sum(m["later_rows"] for m in months[-1:]),
        "dagster/row_count": sum(len(m["entries"]) for m in months),
    }
