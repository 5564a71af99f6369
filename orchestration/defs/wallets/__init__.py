"""Prepaid credit wallets: the wallet catalog, the draw-down ledger and its checks."""
