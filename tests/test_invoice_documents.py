"""The export's and the statement's formatting: amounts formatted from minor units, never
rounded again, at the currency's scale (the end-to-end tests check the documents whole)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from orchestration.defs.invoicing.export import _minor_units, _plain, money
from orchestration.defs.invoicing.statement import render_statement


def test_money_is_formatted_from_minor_units_at_the_currency_scale():
    assert money(488, 2) == "4.88"
    assert money(-65000, 2) == "-650.00"
    assert money(1001, 0) == "1001"
    assert money(5, 3) == "0.005"


def test_an_amount_not_in_whole_minor_units_is_refused_not_rounded():
    assert _minor_units(Decimal("99.010000000000000000"), 2) == 9901
    with pytest.raises(ValueError, match="not in whole minor units"):
        _minor_units(Decimal("99.005"), 2)


def test_exact_decimals_lose_trailing_zeros_but_keep_the_currency_scale():
    assert _plain(Decimal("0.001500000000000000")) == "0.0015"
    assert _plain(Decimal("15.000000000000000000"), 2) == "15.00"
    assert _plain(Decimal("150.000000000000000000"), 0) == "150"
    assert _plain(Decimal("1E+3")) == "1000"


def test_a_yen_statement_shows_whole_yen_and_the_credits_as_a_deduction():
    invoice = (
        "inv_sub_j_20261001", "cus_j", "Customer J", "sub_j", "JPY", 0,
        datetime(2026, 10, 1), datetime(2026, 11, 1), Decimal(15677), Decimal(500),
        Decimal(15177), "finalized", datetime(2026, 11, 4),
    )  # fmt: skip
    lines = [
        ("usage", "GPT-4o input tokens, 1.0M tokens at ¥150 per 1M", 1_000_000, "1M",
         Decimal(150), Decimal(150)),
        ("credits", "Prepaid credits applied", 3, None, None, Decimal(-500)),
    ]  # fmt: skip
    page = render_statement(
        invoice,
        lines,
        [(date(2026, 10, 5), Decimal("150"), 1_000_000)],
        [("gpt-4o", "chat", 1_000_000, Decimal(150))],
        Decimal(1200),
        0,
    )
    assert "<dd id=total-due>¥15,177</dd>" in page
    assert "<dd>−¥500</dd>" in page and "Wallet balance at Oct 31</dt><dd>¥1,200</dd>" in page
    assert "¥150 per 1M" in page and "Oct 1, 2026 – Oct 31, 2026 (UTC)" in page
    assert page.count("<rect class=bar") == 31  # one bar per day of October
    assert "<title>Oct 5: ¥150, 1,000,000 tokens</title>" in page
