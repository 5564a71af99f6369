"""The wallet catalog: ``wallets.yml`` as the ``catalog.wallets``, ``wallet_grants`` and
``wallet_alerts`` tables.

The file is validated against ``contracts/wallets.py`` together with the pricing catalog and
written in the same transaction by ``pricing_catalog`` (orchestration/defs/rating/assets.py):
prices and wallets change together or not at all.
"""

from __future__ import annotations

import polars as pl

from contracts.wallets import Wallet
from orchestration.defs.tables import MONEY, typed_frames

WALLET_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "wallets": {
        "wallet_id": pl.String, "customer_id": pl.String, "currency": pl.String,
        "auto_top_up_threshold": MONEY, "auto_top_up_amount": MONEY,
        "auto_top_up_max_per_period": pl.Int32, "auto_top_up_priority": pl.Int32,
        "allow_overage": pl.Boolean,
        "low_runway_days": pl.Int32,
    },
    "wallet_grants": {
        "wallet_id": pl.String, "grant_id": pl.String, "kind": pl.String, "amount": MONEY,
        "granted_at": pl.Datetime("us"), "expires_at": pl.Datetime("us"), "priority": pl.Int32,
    },
    "wallet_alerts": {
        "wallet_id": pl.String, "customer_id": pl.String, "currency": pl.String,
        "threshold": MONEY,
    },
}  # fmt: skip

WALLET_TABLES = {
    "wallets": "Prepaid wallets: customer, currency, auto top-up rule, low-runway alert "
    "threshold and whether overage is allowed (wallets.yml).",
    "wallet_grants": "Credit grants of each wallet: kind, amount, validity, priority.",
    "wallet_alerts": "Low-balance alert thresholds of each wallet.",
}


def wallet_tables(wallets: list[Wallet]) -> dict[str, pl.DataFrame]:
    """The ``catalog.wallet*`` tables of ``wallets``, as frames with their warehouse types."""
    rows: dict[str, list[dict]] = {"wallets": [], "wallet_grants": [], "wallet_alerts": []}
    for w in wallets:
        rule = w.auto_top_up
        rows["wallets"].append(
            {
                "wallet_id": w.wallet_id,
                "customer_id": w.customer_id,
                "currency": w.currency,
                "auto_top_up_threshold": rule.threshold if rule else None,
                "auto_top_up_amount": rule.amount if rule else None,
                "auto_top_up_max_per_period": rule.max_per_period if rule else None,
                "auto_top_up_priority": rule.priority if rule else None,
                "allow_overage": w.allow_overage,
                "low_runway_days": w.low_runway_days,
            }
        )
        rows["wallet_grants"] += [
            {"wallet_id": w.wallet_id, **g.model_dump(include=set(WALLET_SCHEMAS["wallet_grants"]))}
            for g in w.grants
        ]
        rows["wallet_alerts"] += [
            {"wallet_id": w.wallet_id, "customer_id": w.customer_id, "currency": w.currency,
             "threshold": t}
            for t in w.low_balance_alerts
        ]  # fmt: skip
    return typed_frames(rows, WALLET_SCHEMAS)
