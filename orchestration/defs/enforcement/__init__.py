"""The enforcement file: the state a gateway enforces (hard quota limits, wallets out of credit)."""
