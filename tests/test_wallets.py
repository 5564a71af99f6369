"""Prepaid wallets: the draw-down rules (pure, no warehouse), the wallets.yml contract, and one
warehouse run of the ledger asset (twice, and the next month) plus the dbt wallet models.

Every expected number is worked out by hand in the test.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml
from dagster import TimeWindow, materialize

from contracts.catalog import CatalogError
from contracts.wallets import validate_wallets
from orchestration.defs.rating.assets import pricing_catalog
from orchestration.defs.rating.catalog import (
    catalog_tables,
    load_catalog,
    read_provider_costs,
    write_catalog,
)
from orchestration.defs.rating.resources import PricingCatalogDir
from orchestration.defs.resources import Warehouse
from orchestration.defs.wallets.booking import book_month
from orchestration.defs.wallets.catalog import wallet_tables
from orchestration.defs.wallets.ledger import GrantState, TopUpRule, WalletSpec, simulate
from orchestration.defs.wallets.ledger_asset import wallet_ledger
from orchestration.defs.wallets.ledger_checks import check_violations, run_checks
from orchestration.defs.wallets.ledger_table import (
    LEDGER_COLUMNS,
    LEDGER_DDL,
    LEDGER_ORDER,
    LEDGER_SCHEMA,
)
from tests.dbt_support import dbt_build

D = Decimal
T0 = datetime(2026, 10, 1)
NOV = datetime(2026, 11, 1)
H = timedelta(hours=1)


def CALENDAR(ts: datetime) -> datetime:
    """Calendar-month billing periods (in the asset, int_wallets__draw_inputs gives them)."""
    return ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def grant(gid, amount="10", kind="purchased", granted=T0, expires=None, rank=2):
    return GrantState(gid, kind, D(amount), granted, expires, rank)


def run(grants, charges, rule=None, start=T0, end=NOV, **kw):
    wallet = WalletSpec("w", "c", "USD", rule)
    charges = {start + H * h: D(v) for h, v in charges.items()}
    return simulate(wallet, grants, charges, start, end, kw.pop("period_of", CALENDAR), **kw)


def moves(result, entry_type="deduction"):
    return [(e.grant_id, e.amount) for e in result.entries if e.entry_type == entry_type]


# --- draw-down rules --------------------------------------------------------------------------


def test_grants_are_drawn_by_draw_rank_then_age():
    # The ranks come from int_wallets__draw_inputs (see the draw-order test below); equal
    # ranks (top-ups) draw the oldest first.
    grants = [grant("c", rank=6), grant("a", rank=2), grant("b", rank=4),
              grant("t2", granted=T0 + H, rank=7), grant("t1", rank=7)]  # fmt: skip
    result = run(grants, {5: "45"})
    assert moves(result) == [
        ("a", D(-10)), ("b", D(-10)), ("c", D(-10)), ("t1", D(-10)), ("t2", D(-5)),
    ]  # fmt: skip
    assert [e.wallet_balance_after for e in result.entries if e.entry_type == "deduction"] == [
        D(40), D(30), D(20), D(10), D(5)
    ]  # fmt: skip


# --- credit given back: reversals -----------------------------------------------------------


def test_a_volume_correction_gives_the_credit_back_to_the_grant():
    # The issue's example: volume tiers, first 10 units at 50, beyond at 30. Usage of 10 then
    # 1: hour 0 is 10 x 50 = 500, hour 1 is 11 x 30 - 500 = -170; the period costs 330.
    result = run([grant("g", "1000")], {0: "500", 1: "-170"})
    assert [(e.entry_type, e.grant_id, e.entry_ts, e.amount, e.grant_remaining_after,
             e.wallet_balance_after) for e in result.entries] == [
        ("grant", "g", T0, D(1000), D(1000), D(1000)),
        ("deduction", "g", T0, D(-500), D(500), D(500)),
        ("reversal", "g", T0 + H, D(170), D(670), D(670)),
    ]  # fmt: skip
    assert result.balance == D(670)
    assert (result.deducted, result.reversed, result.credits_used) == (D(500), D(170), D(330))
    assert result.overage == {}


def test_a_negative_hour_cancels_overage_before_giving_credit_back():
    # 100 of credit; hour 0 costs 150: 100 drawn, 50 due. Hour 1 corrects by -30: the customer
    # owes 20 (30 of the 50 cancelled), no credit comes back. Hour 2 corrects by -40: the other
    # 20 due are cancelled and 20 of credit come back. Net charges 80 = credit used 80.
    result = run([grant("g", "100")], {0: "150", 1: "-30", 2: "-40"})
    assert moves(result, "reversal") == [("g", D(20))]
    assert result.overage == {T0: D(50), T0 + H: D(-30), T0 + 2 * H: D(-20)}
    assert result.credits_used == D(80) and result.balance == D(20)


def test_reversals_go_back_in_reverse_draw_order_at_most_what_each_grant_gave():
    grants = [grant("promo", "50", "promotional", rank=2), grant("paid", "100", rank=4)]
    # +80: promo 50, paid 30. -20: paid first (last in draw order), 20 of its 30.
    # -40: paid's last 10, then promo 30. Net charges 20 = credit used 20.
    result = run(grants, {0: "80", 1: "-20", 2: "-40"})
    assert moves(result) == [("promo", D(-50)), ("paid", D(-30))]
    assert moves(result, "reversal") == [("paid", D(20)), ("paid", D(10)), ("promo", D(30))]
    assert result.credits_used == D(20) and result.balance == D(130)
    assert [e.entry_order for e in result.entries if e.entry_ts == T0 + 2 * H] == [0, 1]


def test_credit_given_back_to_an_expired_grant_expires_at_once():
    expires = T0 + timedelta(days=9)  # Oct 10
    grants = [grant("promo", "50", "promotional", expires=expires)]
    # Oct 5 draws all 50; nothing is left to expire on Oct 10. The Oct 15 correction of -20
    # gives 20 back to the promo, which expired: it expires at once (what a clean run with
    # net charges of 30 would have left to expire). 50 granted = 30 used + 20 expired + 0.
    oct5, oct15 = T0 + timedelta(days=4), T0 + timedelta(days=14)
    result = run(grants, {(oct5 - T0) // H: "50", (oct15 - T0) // H: "-20"})
    assert [(e.entry_type, e.entry_ts, e.entry_order, e.amount, e.wallet_balance_after)
            for e in result.entries] == [
        ("grant", T0, 0, D(50), D(50)),
        ("deduction", oct5, 0, D(-50), D(0)),
        ("reversal", oct15, 0, D(20), D(20)),
        ("expiry", oct15, 1, D(-20), D(0)),
    ]  # fmt: skip
    assert result.credits_used == D(30) and result.balance == 0


def test_a_correction_only_gives_back_what_its_own_billing_period_drew():
    # October drew 40; November's first hour is a correction of -10 (of a November period
    # that drew nothing yet): no credit comes back from October's draw.
    result = run([grant("g", "100")], {0: "40", 31 * 24: "-10"}, end=datetime(2026, 12, 1))
    assert moves(result, "reversal") == []
    assert result.overage == {NOV: D(-10)} and result.balance == D(60)


def test_expiry_mid_period_books_the_remainder_at_expires_at():
    expires = T0 + timedelta(hours=2, minutes=30)
    grants = [grant("promo", "50", "promotional", expires=expires),
              grant("paid", "100", rank=4)]  # fmt: skip
    # The promo pays hours 00 and 01 (they end by 02:30); hour 02 ends at 03:00, too late.
    result = run(grants, {0: "10", 1: "10", 2: "10", 3: "5"})
    assert [(e.entry_type, e.grant_id, e.entry_ts, e.amount, e.wallet_balance_after)
            for e in result.entries] == [
        ("grant", "paid", T0, D(100), D(100)),
        ("grant", "promo", T0, D(50), D(150)),
        ("deduction", "promo", T0, D(-10), D(140)),
        ("deduction", "promo", T0 + H, D(-10), D(130)),
        ("deduction", "paid", T0 + 2 * H, D(-10), D(120)),
        ("expiry", "promo", expires, D(-30), D(90)),
        ("deduction", "paid", T0 + 3 * H, D(-5), D(85)),
    ]  # fmt: skip
    expiry = next(e for e in result.entries if e.entry_type == "expiry")
    assert expiry.grant_remaining_after == 0 and expiry.usage_hour is None


def test_balance_exhausted_mid_hour_leaves_overage_not_carried_forward():
    result = run([grant("g", "25")], {0: "10", 1: "20", 2: "7", 3: "-4", 4: "0"})
    assert moves(result) == [("g", D(-10)), ("g", D(-15))]
    # Hour 3's correction of -4 cancels 4 of what is due (no credit was left to give back).
    assert result.overage == {T0 + H: D(5), T0 + 2 * H: D(7), T0 + 3 * H: D(-4)}
    assert result.balance == 0
    assert min(e.wallet_balance_after for e in result.entries) == 0


def test_a_grant_given_mid_hour_pays_from_the_next_hour():
    result = run([grant("late", "10", granted=T0 + timedelta(minutes=30))], {0: "4", 1: "4"})
    assert result.overage == {T0: D(4)}
    assert moves(result) == [("late", D(-4))]


def test_auto_top_up_fires_once_when_the_balance_falls_below_threshold():
    rule = TopUpRule(threshold=D(20), amount=D(100), max_per_period=1, draw_rank=3)
    # 00: 50 - 40 = 10 < 20 -> top-up of 100 granted at 01:00. 01: 100 drawn (10 old, 90 new)
    # -> 10 < 20 again, but the period's one top-up is used. 02: 10 drawn, 20 overage.
    # November 1 00:00: balance 0, charge 5 -> overage 5; a new period -> top-up at 01:00.
    result = run([grant("g", "50")], {0: "40", 1: "100", 2: "30", 31 * 24: "5"}, rule,
                 end=datetime(2026, 12, 1))  # fmt: skip
    assert [(e.grant_id, e.entry_ts, e.amount, e.grant_kind) for e in result.entries
            if e.entry_type == "top_up"] == [
        ("topup-20261001T0100", T0 + H, D(100), "purchased"),
        ("topup-20261101T0100", NOV + H, D(100), "purchased"),
    ]  # fmt: skip
    assert moves(result) == [
        ("g", D(-40)), ("g", D(-10)), ("topup-20261001T0100", D(-90)),
        ("topup-20261001T0100", D(-10)),
    ]  # fmt: skip
    assert result.overage == {T0 + 2 * H: D(20), NOV: D(5)}
    assert result.balance == D(100)


def test_auto_top_up_respects_max_per_period():
    rule = TopUpRule(threshold=D(20), amount=D(30), max_per_period=2, draw_rank=3)
    result = run([], {0: "1", 1: "25", 2: "25", 3: "25"}, rule)
    # 00: nothing to draw, 0 < 20 -> top-up #1 at 01. 01: 25 of 30 -> 5 -> #2 at 02.
    # 02: 25 of 35 -> 10 < 20 but capped. 03: 10 drawn, 15 overage.
    assert [e.entry_ts for e in result.entries if e.entry_type == "top_up"] == [T0 + H, T0 + 2 * H]
    assert result.overage == {T0: D(1), T0 + 3 * H: D(15)}
    assert result.top_ups_by_period == {T0: 2}
    assert result.balance == 0


def test_a_top_up_decided_in_the_last_hour_is_booked_by_the_next_window():
    rule = TopUpRule(threshold=D(5), amount=D(10), max_per_period=3, draw_rank=3)
    last = NOV - H
    october = run([grant("g", "8")], {(last - T0) // H: "4"}, rule)
    assert not moves(october, "top_up") and october.balance == D(4)
    november = run(october.grants, {}, rule, start=NOV, end=datetime(2026, 12, 1),
                   balance=october.balance, previous_hour_balance=october.balance)  # fmt: skip
    assert moves(november, "top_up") == [("topup-20261101T0000", D(10))]


def test_the_balance_never_goes_negative_and_the_identity_holds():
    rng = random.Random(7)
    rule = TopUpRule(threshold=D("3.5"), amount=D("7.25"), max_per_period=3, draw_rank=3)
    grants = [
        grant(f"g{i}", f"{rng.randint(1, 900) / 100}", rng.choice(["purchased", "promotional"]),
              T0 + H * rng.randint(0, 300),
              T0 + H * rng.randint(301, 700) + timedelta(minutes=rng.choice([0, 20])),
              2 * rng.randint(1, 3))
        for i in range(6)
    ]  # fmt: skip
    charges = {h: f"{rng.randint(-50, 400) / 1000}" for h in range(744) if rng.random() < 0.6}
    result = run(grants, charges, rule)
    balance = D(0)
    remaining: dict[str, Decimal] = {}
    for e in result.entries:
        balance += e.amount
        remaining[e.grant_id] = remaining.get(e.grant_id, D(0)) + e.amount
        assert e.wallet_balance_after == balance >= 0
        assert e.grant_remaining_after == remaining[e.grant_id] >= 0
    # Every charge is drawn, given back or due: credit used + overage = net charges.
    assert result.credits_used + sum(result.overage.values()) == sum(D(v) for v in charges.values())
    # And the min identity's ERROR check holds on it (expiring grants, top-ups, corrections).
    assert min_identity_violations(grants, charges, rule=rule)[1] == []


# --- credit used = min(eligible credit, net charges): the ERROR check's SQL --------------------

MIN_IDENTITY = "credit_used_is_min_of_eligible_credit_and_net_charges"


def min_identity_violations(grants, charges, booked_charges=None, tamper=None, rule=None):
    """Book ``charges`` (hour offset -> amount) with ``simulate`` (or ``booked_charges``, to
    book a ledger that does not match the charges), write the entries and the draw inputs the
    check reads into a DuckDB database, optionally ``tamper`` with the ledger (SQL), and
    return the check's violations."""
    result = run([grant(g.grant_id, g.amount, g.kind, g.granted_at, g.expires_at, g.draw_rank)
                  for g in grants], booked_charges or charges, rule)  # fmt: skip
    with duckdb.connect() as con:
        con.execute(LEDGER_DDL)
        frame = pl.DataFrame(
            [e.row() for e in result.entries], schema=LEDGER_SCHEMA, orient="row"
        ).select(LEDGER_COLUMNS)
        con.register("entries", frame.to_arrow())
        con.execute("insert into billing.wallet_ledger by name select * from entries")
        con.execute(
            "create schema marts; create table marts.int_wallets__draw_inputs (wallet_id varchar, "
            "input_type varchar, grant_id varchar, valid_from timestamp, valid_to timestamp, "
            "billing_period_start timestamp, amount decimal(38, 18))"
        )
        rows = [("w", "grant", g.grant_id, g.granted_at, g.expires_at, None, g.amount)
                for g in grants]  # fmt: skip
        for offset, amount in charges.items():
            hour = T0 + H * offset
            rows.append(("w", "charge", None, hour, hour + H, CALENDAR(hour), D(amount)))
        con.executemany(
            "insert into marts.int_wallets__draw_inputs values (?, ?, ?, ?, ?, ?, ?)", rows
        )
        if tamper:
            con.execute(tamper)
        return result, check_violations(con, MIN_IDENTITY)


def test_the_min_identity_holds_on_the_issue_example():
    # 1,000 of credit, usage of 10 then 1 under volume tiers: +500, then -170. Net charges
    # 330 = credit used 330 = min(1000, 330); the wallet ends at 670.
    result, violations = min_identity_violations([grant("g", "1000")], {0: "500", 1: "-170"})
    assert (result.credits_used, result.balance) == (D(330), D(670))
    assert violations == []


def test_the_min_identity_holds_with_overage_and_credit_eligible_too_late():
    # a: 50 from midnight; b: 100 given at 00:30, so it pays from the 01:00 hour (not hour 0).
    # 00: 80 -> a's 50, 30 due (b not eligible yet). 02: 30 -> from b (70 left).
    # 03: 100 -> b's 70, 30 due: the wallet is exhausted. 04: -40 cancels 40 of the 60 due
    # (no credit back). 05: 20, all due. Net charges 190, credit used 150, overage 40.
    grants = [grant("a", "50", rank=2), grant("b", "100", granted=T0 + H / 2, rank=4)]
    charges = {0: "80", 2: "30", 3: "100", 4: "-40", 5: "20"}
    result, violations = min_identity_violations(grants, charges)
    assert result.overage == {T0: D(30), T0 + 3 * H: D(30), T0 + 4 * H: D(-40), T0 + 5 * H: D(20)}
    assert (result.credits_used, result.balance) == (D(150), D(0))
    assert violations == []


def test_the_min_identity_fails_when_credit_is_left_unused_while_charges_are_unpaid():
    # 1,000 of credit: +500, -170, +40 -> 630 left. Removing hour 2's deduction leaves its 40
    # unpaid while 670 of eligible credit remained (1000 - 500 + 170).
    _, violations = min_identity_violations(
        [grant("g", "1000")],
        {0: "500", 1: "-170", 2: "40"},
        tamper="delete from billing.wallet_ledger where entry_type = 'deduction' "
        "and usage_hour = timestamp '2026-10-01 02:00'",
    )
    assert violations == [
        ("w", "2026-10-01 02:00: charge 40.000000000000000000, deducted 0.000000000000000000, "
         "reversed 0.000000000000000000, "
         "left 40.000000000000000000 unpaid while 670.000000000000000000 of eligible credit "
         "remained"),
    ]  # fmt: skip


def test_the_min_identity_fails_when_credit_comes_back_while_overage_is_due():
    # 100 of credit, hour 0 costs 150: 100 drawn, 50 due. Hour 1's -30 must cancel 30 of the
    # 50 due; a ledger booked as if hour 0 cost 100 gives 30 back instead.
    _, violations = min_identity_violations(
        [grant("g", "100")], {0: "150", 1: "-30"}, booked_charges={0: "100", 1: "-30"}
    )
    assert violations == [
        ("w", "2026-10-01 01:00: charge -30.000000000000000000, deducted 0.000000000000000000, "
         "reversed 30.000000000000000000, gave credit back while 50.000000000000000000 of the "
         "period's overage was still due"),
    ]  # fmt: skip


# --- the wallets.yml contract -----------------------------------------------------------------


def test_the_contract_lists_every_problem_with_file_entry_field_and_expectation():
    doc = {
        "wallets": [
            {"wallet_id": "w1", "customer_id": "cus_a", "currency": "EUR", "grants": []},
            {"wallet_id": "w2", "customer_id": "cus_x", "currency": "USD"},
            {"wallet_id": "w3", "customer_id": "cus_b", "currency": "USD", "grants": [
                {"grant_id": "g", "kind": "gift", "amount": "5", "granted_at": "2026-10-02"},
                {"grant_id": "h", "kind": "promotional", "amount": "5",
                 "granted_at": "2026-10-02", "expires_at": "2026-10-01"}]},
            {"wallet_id": "w4", "customer_id": "cus_a", "currency": "USD"},
            {"wallet_id": "w5", "customer_id": "cus_c", "currency": "USD",
             "low_runway_days": 0},
        ]
    }  # fmt: skip
    with pytest.raises(CatalogError) as info:
        validate_wallets(doc, {"cus_a": "USD", "cus_b": "USD", "cus_c": "USD"})
    got = {(p.file, p.entry, p.field) for p in info.value.problems}
    assert got == {
        ("wallets.yml", "wallets[0] (wallet_id=w1)", "currency"),
        ("wallets.yml", "wallets[1] (wallet_id=w2)", "customer_id"),
        ("wallets.yml", "wallets[2] (wallet_id=w3)", "grants.0.kind"),
        ("wallets.yml", "wallets[2] (wallet_id=w3)", "grants.1"),
        ("wallets.yml", "wallets[3] (wallet_id=w4)", "customer_id"),
        ("wallets.yml", "wallets[4] (wallet_id=w5)", "low_runway_days"),
    }
    assert all(p.what and p.expected for p in info.value.problems)


def test_the_demo_wallets_are_valid():
    root = Path(__file__).resolve().parent.parent / "catalog"
    documents = yaml.safe_load((root / "customers.yml").read_text())["customers"]
    customers = {c["customer_id"]: c["currency"] for c in documents}
    wallets = validate_wallets(yaml.safe_load((root / "wallets.yml").read_text()), customers)
    assert len(wallets) >= 8
    assert any(w.currency == "JPY" for w in wallets)
    assert any(w.auto_top_up for w in wallets)
    assert any(w.low_runway_days for w in wallets)


# --- the asset on a small warehouse -----------------------------------------------------------

CATALOG = {
    "customers.yml": {"customers": [
        {"customer_id": "cus_a", "name": "A", "currency": "USD"},
        {"customer_id": "cus_b", "name": "B", "currency": "USD"},
        {"customer_id": "cus_c", "name": "C", "currency": "USD"},
    ]},
    "plans.yml": {"plans": [{"plan_id": "p", "name": "P", "currency": "USD", "prices": [
        {"price_id": "p-out", "meter": "output", "selector": {"model": "m"}, "included": 100,
         "versions": [{"effective_from": "2026-01-01", "unit_price": "0.01"}]}]}]},
    "subscriptions.yml": {"subscriptions": [
        {"subscription_id": "sub_a", "customer_id": "cus_a", "plan_id": "p", "start": "2026-01-01"},
        {"subscription_id": "sub_b", "customer_id": "cus_b", "plan_id": "p", "start": "2026-01-01",
         "billing_anchor_day": 15},
        {"subscription_id": "sub_c", "customer_id": "cus_c", "plan_id": "p", "start": "2026-01-01"},
    ]},
}  # fmt: skip
WALLETS = {"wallets": [
    {"wallet_id": "wal_a", "customer_id": "cus_a", "currency": "USD",
     "low_balance_alerts": ["8", "2"],
     "auto_top_up": {"threshold": "1", "amount": "3", "max_per_period": 1},
     "grants": [
         {"grant_id": "g1", "kind": "purchased", "amount": "10", "granted_at": "2026-10-01"},
         {"grant_id": "g2", "kind": "promotional", "amount": "5", "granted_at": "2026-10-01",
          "expires_at": "2026-10-03T12:00:00"}]},
    {"wallet_id": "wal_b", "customer_id": "cus_b", "currency": "USD",
     "grants": [
         {"grant_id": "g1", "kind": "purchased", "amount": "2", "granted_at": "2026-10-01"}]},
]}  # fmt: skip
# (customer, usage hour, amount, period quantity before, billable quantity); cus_c has no wallet.
# A hand-made rated table: amounts and quantities need not agree with the price.
RATED = [
    ("cus_a", datetime(2026, 10, 1, 0), "2", 0, 50),
    ("cus_a", datetime(2026, 10, 1, 0), "1", 50, 30),
    ("cus_a", datetime(2026, 10, 2, 10), "1.5", 80, 30),
    ("cus_a", datetime(2026, 10, 3, 12), "4", 110, 1),
    ("cus_a", datetime(2026, 10, 4, 0), "-0.5", 111, 1),
    ("cus_a", datetime(2026, 10, 5, 0), "6", 112, 1),
    ("cus_a", datetime(2026, 10, 6, 0), "2", 113, 1),
    ("cus_a", datetime(2026, 10, 31, 23), "1.6", 114, 1),
    ("cus_b", datetime(2026, 10, 14, 10), "1.5", 0, 1),
    ("cus_b", datetime(2026, 10, 15, 10), "1", 0, 1),
    ("cus_c", datetime(2026, 10, 1, 0), "9", 0, 1),
]


def _period(customer: str, hour: datetime) -> datetime:
    """The rating's billing period of these rows (cus_b is anchored on the 15th)."""
    if customer == "cus_b":
        return datetime(2026, 9, 15) if hour.day < 15 else datetime(2026, 10, 15)
    return datetime(2026, 10, 1)


def _rated_frame() -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"usage_hour": hour, "billing_period_start": _period(c, hour),
             "customer_id": c, "subscription_id": f"sub_{c[-1]}", "plan_id": "p",
             "price_id": "p-out", "price_version": 1, "meter": "output", "provider": "p",
             "model": "m", "feature": None, "environment": None, "status": "success",
             "quantity": qty, "billable_quantity": qty, "period_quantity_before": before,
             "amount": D(amount), "currency": "USD", "provider_cost": D(0),
             "has_provider_cost": False}
            for c, hour, amount, before, qty in RATED
        ],
        schema_overrides={"amount": pl.Decimal(38, 18), "provider_cost": pl.Decimal(38, 18),
                          "price_version": pl.Int32, "feature": pl.String,
                          "environment": pl.String},
    )  # fmt: skip


def _ledger(warehouse: str) -> list[tuple]:
    with duckdb.connect(warehouse, read_only=True) as con:
        return con.execute("select * from billing.wallet_ledger order by all").fetchall()


# The tests of `booked` are marked slow: the fixture (a catalog run, a dbt build and the
# ledger booked twice) takes ~25 s on 2 cores.
@pytest.fixture(scope="module")
def booked(tmp_path_factory):
    root = tmp_path_factory.mktemp("wallets")
    catalog_dir = root / "catalog"
    catalog_dir.mkdir()
    for name, doc in {**CATALOG, "wallets.yml": WALLETS}.items():
        (catalog_dir / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    card_path = Path(__file__).parent / "fixtures/catalog_e2e/provider_costs.csv"
    (catalog_dir / "provider_costs.csv").write_bytes(card_path.read_bytes())
    warehouse = str(root / "warehouse.duckdb")
    with duckdb.connect(warehouse) as con:
        card = read_provider_costs(card_path)
        write_catalog(con, catalog_tables(load_catalog(catalog_dir), card))
        con.execute("create schema marts")
        con.register("rated", _rated_frame().to_arrow())
        con.execute("create table marts.fct_rated_charges_hourly as select * from rated")
        # The quota alerts and the spike view of fct_billing_alerts read the token usage too
        # (no quotas and no usage here).
        con.execute(
            "create table marts.fct_token_usage_hourly (usage_hour timestamp, "
            "customer_id varchar, model varchar, feature varchar, total_tokens bigint, "
            "event_count bigint)"
        )
    resources = {
        "warehouse": Warehouse(path=warehouse),
        "catalog_dir": PricingCatalogDir(path=str(catalog_dir)),
    }
    assert materialize([pricing_catalog], resources=resources).success
    # The draw inputs view (the hourly grain builds it in the pipeline).
    inputs = dbt_build(warehouse, root / "target", None, "tag:catalog", "int_wallets__draw_inputs")
    assert inputs.returncode == 0, inputs.stdout[-3000:]
    runs = []
    for partition in ("2026-10-01", "2026-10-01"):
        result = materialize([wallet_ledger], partition_key=partition, resources=resources)
        runs.append((result, _ledger(warehouse)))
    # Every test sees both months, whatever ran before it (booking again is a no-op).
    _book_november(warehouse)
    return {"root": root, "warehouse": warehouse, "resources": resources, "runs": runs}


@pytest.mark.slow
def test_the_ledger_month_is_booked_exactly_and_identically_twice(booked):
    (first, rows), (second, again) = booked["runs"]
    assert first.success and second.success
    assert rows == again
    with duckdb.connect(booked["warehouse"], read_only=True) as con:
        entries = con.execute(
            "select wallet_id, entry_type, grant_id, entry_ts, amount, grant_remaining_after, "
            "wallet_balance_after, billing_period_start from billing.wallet_ledger "
            f"where entry_ts < ? order by wallet_id, {LEDGER_ORDER}",
            [NOV],  # October's entries (the fixture books November too)
        ).fetchall()
    oct1, sep15, oct15 = datetime(2026, 10, 1), datetime(2026, 9, 15), datetime(2026, 10, 15)
    d, t = D, datetime
    top_up = "topup-20261005T0100"
    # g2 (promotional, expiring) draws before g1; the top-up after both. The -0.5 of Oct 4
    # gives 0.5 back to g1 (last in draw order among the period's grants); so g1 still has
    # 0.5 for Oct 6, before the top-up is touched.
    assert entries == [
        ("wal_a", "grant", "g1", oct1, d(10), d(10), d(10), oct1),
        ("wal_a", "grant", "g2", oct1, d(5), d(5), d(15), oct1),
        ("wal_a", "deduction", "g2", oct1, d(-3), d(2), d(12), oct1),
        ("wal_a", "deduction", "g2", t(2026, 10, 2, 10), d("-1.5"), d("0.5"), d("10.5"), oct1),
        ("wal_a", "expiry", "g2", t(2026, 10, 3, 12), d("-0.5"), d(0), d(10), oct1),
        ("wal_a", "deduction", "g1", t(2026, 10, 3, 12), d(-4), d(6), d(6), oct1),
        ("wal_a", "reversal", "g1", t(2026, 10, 4), d("0.5"), d("6.5"), d("6.5"), oct1),
        ("wal_a", "deduction", "g1", t(2026, 10, 5), d(-6), d("0.5"), d("0.5"), oct1),
        ("wal_a", "top_up", top_up, t(2026, 10, 5, 1), d(3), d(3), d("3.5"), oct1),
        ("wal_a", "deduction", "g1", t(2026, 10, 6), d("-0.5"), d(0), d(3), oct1),
        ("wal_a", "deduction", top_up, t(2026, 10, 6), d("-1.5"), d("1.5"), d("1.5"), oct1),
        ("wal_a", "deduction", top_up, t(2026, 10, 31, 23), d("-1.5"), d(0), d(0), oct1),
        ("wal_b", "grant", "g1", oct1, d(2), d(2), d(2), sep15),
        (
            "wal_b",
            "deduction",
            "g1",
            datetime(2026, 10, 14, 10),
            d("-1.5"),
            d("0.5"),
            d("0.5"),
            sep15,
        ),
        ("wal_b", "deduction", "g1", datetime(2026, 10, 15, 10), d("-0.5"), d(0), d(0), oct15),
    ]
    meta = second.asset_materializations_for_node("billing__wallet_ledger")[0].metadata
    assert meta["entries_by_type"].data == {
        "grant": 3, "top_up": 1, "expiry": 1, "deduction": 9, "reversal": 1
    }  # fmt: skip
    assert meta["total_deducted"].data == {"USD": "20"}
    assert meta["total_reversed"].data == {"USD": "0.5"}
    assert meta["total_credits_used"].data == {"USD": "19.5"}
    assert meta["overage"].data == {"USD": "0.6"}  # 0.1 on Oct 31 + 0.5 on Oct 15
    checks = second.get_asset_check_evaluations()
    assert len(checks) == 7 and all(c.passed for c in checks)


def _book_november(warehouse: str) -> None:
    """Book November as the wallet_ledger asset does (``book_month`` replaces the month, so
    booking it again changes nothing). Called directly rather than through the asset's
    November partition, which exists only once November is over on the machine's clock."""
    with duckdb.connect(warehouse) as con:
        con.execute("begin transaction")
        book_month(con, NOV, datetime(2026, 12, 1))
        con.execute("commit")


@pytest.mark.slow
def test_the_next_month_books_the_top_up_decided_in_the_last_hour(booked):
    resources, warehouse = booked["resources"], booked["warehouse"]
    october = booked["runs"][0][1]
    _book_november(warehouse)
    november = [r for r in _ledger(warehouse) if r[7] >= NOV]
    assert [(r[1], r[6], r[4], r[7], r[11]) for r in november] == [
        ("wal_a", "top_up", "topup-20261101T0000", NOV, D(3))
    ]
    # Re-running October leaves both months as they were.
    assert materialize([wallet_ledger], partition_key="2026-10-01", resources=resources).success
    assert [r for r in _ledger(warehouse) if r[7] < NOV] == october
    assert [r for r in _ledger(warehouse) if r[7] >= NOV] == november


@pytest.mark.slow
def test_the_dbt_wallet_models_build_and_their_tests_pass(booked):
    root, warehouse = booked["root"], booked["warehouse"]
    window = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    result = dbt_build(warehouse, root / "target", window, "tag:catalog", "path:models/wallets")
    assert result.returncode == 0, result.stdout[-4000:]
    with duckdb.connect(warehouse, read_only=True) as con:
        alerts = con.execute(
            "select alert_type, coalesce(wallet_id, subscription_id), alert_hour, threshold "
            "from marts.fct_billing_alerts order by alert_hour, alert_type, threshold desc"
        ).fetchall()
        balances = dict(
            con.execute(
                "select balance_date, balance_at_day_end from marts.fct_wallet_balances "
                "where wallet_id = 'wal_a'"
            ).fetchall()
        )
        expiring = con.execute(
            "select balance_date, expiring_within_30_days from marts.fct_wallet_balances "
            "where wallet_id = 'wal_a' and expiring_within_30_days > 0 order by 1"
        ).fetchall()
        reconciliation = con.execute(
            "select wallet_id, granted, topped_up, deducted, reversed, expired, balance, "
            "difference from marts.fct_wallet_reconciliation order by 1"
        ).fetchall()
        credits = con.execute(
            "select wallet_id, subscription_id, billing_period_start, deducted, reversed, "
            "credits_used, topped_up from marts.fct_wallet_credits order by all"
        ).fetchall()
    day = datetime
    assert alerts == [
        ("allowance_80", "sub_a", day(2026, 10, 1), D(80)),
        ("allowance_100", "sub_a", day(2026, 10, 2, 10), D(100)),
        ("low_balance", "wal_a", day(2026, 10, 3, 12), D(8)),
        ("low_balance", "wal_a", day(2026, 10, 5), D(2)),
        ("low_balance", "wal_a", day(2026, 10, 6), D(2)),
    ]
    assert balances[day(2026, 10, 1).date()] == D(12)
    assert balances[day(2026, 10, 3).date()] == D(6)
    assert balances[day(2026, 10, 5).date()] == D("3.5")
    assert balances[day(2026, 10, 31).date()] == D(0)
    assert balances[day(2026, 11, 1).date()] == D(3)  # the November top-up
    # g2 expires Oct 3 12:00: 2 left at the end of Oct 1, 0.5 at the end of Oct 2, then gone.
    assert expiring == [(day(2026, 10, 1).date(), D(2)), (day(2026, 10, 2).date(), D("0.5"))]
    assert reconciliation == [
        ("wal_a", D(15), D(6), D(18), D("0.5"), D("0.5"), D(3), D(0)),
        ("wal_b", D(2), D(0), D(2), D(0), D(0), D(0), D(0)),
    ]
    # What the invoice's credits line reads: the net credit used per subscription and period.
    assert credits == [
        ("wal_a", "sub_a", day(2026, 10, 1), D(18), D("0.5"), D("17.5"), D(3)),
        ("wal_a", "sub_a", day(2026, 11, 1), D(0), D(0), D(0), D(3)),
        ("wal_b", "sub_b", day(2026, 9, 15), D("1.5"), D(0), D("1.5"), D(0)),
        ("wal_b", "sub_b", day(2026, 10, 15), D("0.5"), D(0), D("0.5"), D(0)),
    ]


@pytest.mark.slow
def test_the_identity_checks_fail_on_a_tampered_ledger(booked):
    """Delete October's reversal row: the wallet then looks as if the -0.5 hour had drawn
    nothing back (the bug of the issue). Checked inside a transaction rolled back after."""
    with duckdb.connect(booked["warehouse"]) as con:
        con.execute("begin transaction")
        con.execute("delete from billing.wallet_ledger where entry_type = 'reversal'")
        failed = {c.check_name: c.metadata for c in run_checks(con) if not c.passed}
        con.execute("rollback")
        assert all(c.passed for c in run_checks(con))
    assert set(failed) == {
        "wallet_balance_identity",  # later balances no longer the running sum
        "deductions_within_grant_remaining",  # g1's later remainders neither
        "credit_used_within_net_charges",  # 18 used against 17.6 of net charges
        MIN_IDENTITY,  # from Oct 4 on, credit used to date exceeds the charges to date
    }
    money = "{:.18f}".format
    assert failed[MIN_IDENTITY]["sample"].md_str.splitlines() == [
        f"- wal_a: 2026-10-{day}: charge {money(D(charge))}, deducted {money(D(drawn))}, "
        f"reversed {money(0)}, credit used exceeds the period's charges to date by "
        f"{money(D(excess))}"
        for day, charge, drawn, excess in [
            ("04 00:00", "-0.5", 0, "0.5"), ("05 00:00", 6, 6, "0.5"), ("06 00:00", 2, 2, "0.5"),
            ("31 23:00", "1.6", "1.5", "0.4"),  # 0.1 of overage: 0.4 too much from then on
        ]
    ]  # fmt: skip
    assert failed["credit_used_within_net_charges"]["sample"].md_str == (
        "- wal_a: 2026-10-01: credit used 18.000000000000000000, net charges 17.600000000000000000"
    )


@pytest.mark.slow
def test_the_min_identity_check_fails_on_credit_left_unused_in_the_warehouse(booked):
    """Delete the Oct 5 deduction (6 from g1): that hour looks unpaid while g1 still had 6.5
    (10 - 4 + 0.5), and Oct 31 23:00's 0.1 of overage looks unpaid while g1 still had 6."""
    with duckdb.connect(booked["warehouse"]) as con:
        con.execute("begin transaction")
        con.execute(
            "delete from billing.wallet_ledger where entry_type = 'deduction' "
            "and wallet_id = 'wal_a' and usage_hour = timestamp '2026-10-05 00:00'"
        )
        violations = check_violations(con, MIN_IDENTITY)
        con.execute("rollback")
        assert check_violations(con, MIN_IDENTITY) == []
    money = "{:.18f}".format
    assert violations == [
        ("wal_a", f"2026-10-05 00:00: charge {money(6)}, deducted {money(0)}, reversed "
         f"{money(0)}, left {money(6)} unpaid while {money(D('6.5'))} of eligible credit remained"),
        ("wal_a", f"2026-10-31 23:00: charge {money(D('1.6'))}, deducted {money(D('1.5'))}, "
         f"reversed {money(0)}, left {money(D('0.1'))} unpaid while {money(6)} of eligible "
         "credit remained"),
    ]  # fmt: skip


@pytest.mark.slow
def test_the_draw_order_top_up_rank_and_billing_periods_come_from_sql(tmp_path):
    d10, d20 = "2026-10-11", "2026-10-21"
    documents = {
        **CATALOG,
        "subscriptions.yml": {"subscriptions": [
            {"subscription_id": "sub_a", "customer_id": "cus_a", "plan_id": "p",
             "start": "2026-10-10", "billing_anchor_day": 15}]},
    }  # fmt: skip
    wallets = {"wallets": [{
        "wallet_id": "w", "customer_id": "cus_a", "currency": "USD",
        "auto_top_up": {"threshold": "1", "amount": "3", "max_per_period": 1, "priority": 1},
        "grants": [
            {"grant_id": "a", "kind": "purchased", "amount": "1", "granted_at": "2026-10-01",
             "priority": 1},  # 7th: priority 1 (the top-up, priority 1, comes after it)
            {"grant_id": "b", "kind": "purchased", "amount": "1", "granted_at": "2026-10-01"},
            {"grant_id": "c", "kind": "purchased", "amount": "1", "granted_at": "2026-10-01",
             "expires_at": d10},  # 4th: purchased after promotional
            {"grant_id": "e", "kind": "promotional", "amount": "1",
             "granted_at": "2026-10-01", "expires_at": d20},  # 5th: later expiry
            {"grant_id": "y", "kind": "promotional", "amount": "1",
             "granted_at": "2026-10-01T01:00:00", "expires_at": d10},  # 3rd: id tie
            {"grant_id": "x", "kind": "promotional", "amount": "1",
             "granted_at": "2026-10-01T01:00:00", "expires_at": d10},  # 2nd
            {"grant_id": "z", "kind": "promotional", "amount": "1",
             "granted_at": "2026-10-01", "expires_at": d10},  # 1st: oldest
            {"grant_id": "q", "kind": "purchased", "amount": "1", "granted_at": "2026-10-01",
             "priority": 2},  # after the top-ups
        ]}]}  # fmt: skip
    warehouse = str(tmp_path / "warehouse.duckdb")
    catalog_dir = tmp_path / "catalog"
    catalog_dir.mkdir()
    for name, doc in documents.items():
        (catalog_dir / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    customers = {c["customer_id"]: c["currency"] for c in CATALOG["customers.yml"]["customers"]}
    with duckdb.connect(warehouse) as con:
        card = read_provider_costs(
            Path(__file__).parent / "fixtures/catalog_e2e/provider_costs.csv"
        )
        write_catalog(con, catalog_tables(load_catalog(catalog_dir), card))
        write_catalog(con, wallet_tables(validate_wallets(wallets, customers)))
        con.execute("create schema marts")
        con.register("rated", _rated_frame().head(0).to_arrow())
        con.execute("create table marts.fct_rated_charges_hourly as select * from rated")
    result = dbt_build(
        warehouse, tmp_path / "target", None, "tag:catalog", "int_wallets__draw_inputs"
    )
    assert result.returncode == 0, result.stdout[-3000:]
    with duckdb.connect(warehouse, read_only=True) as con:
        ranks = con.execute(
            "select coalesce(grant_id, 'top-ups'), draw_rank from marts.int_wallets__draw_inputs "
            "where input_type in ('grant', 'wallet') order by draw_rank"
        ).fetchall()
        periods = con.execute(
            "select valid_from, valid_to, billing_period_start from marts.int_wallets__draw_inputs "
            "where input_type = 'period' and valid_from < '2026-11-20' "
            "order by valid_from"
        ).fetchall()
    assert ranks == [
        ("z", 2), ("x", 4), ("y", 6), ("c", 8), ("e", 10), ("b", 12), ("a", 14),
        ("top-ups", 15), ("q", 16),
    ]  # fmt: skip
    day = datetime
    # No subscription before Oct 10 (calendar months); from Oct 10 the anchor on the 15th.
    assert periods == [
        (day(2026, 9, 1), day(2026, 9, 15), day(2026, 9, 1)),
        (day(2026, 9, 15), day(2026, 10, 1), day(2026, 9, 1)),
        (day(2026, 10, 1), day(2026, 10, 10), day(2026, 10, 1)),
        (day(2026, 10, 10), day(2026, 10, 15), day(2026, 9, 15)),
        (day(2026, 10, 15), day(2026, 11, 1), day(2026, 10, 15)),
        (day(2026, 11, 1), day(2026, 11, 15), day(2026, 10, 15)),
        (day(2026, 11, 15), day(2026, 12, 1), day(2026, 11, 15)),
    ]
