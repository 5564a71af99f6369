"""Wallets' definitions: the draw-down ledger (its checks are on the asset)."""

from __future__ import annotations

from dagster import Definitions

from orchestration.defs.wallets.ledger_asset import wallet_ledger


def build_defs() -> Definitions:
    return Definitions(assets=[wallet_ledger])
