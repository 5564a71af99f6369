"""Provider cost end to end: a model the cost card does not know costs null, not 0.

A real S3 server, real Dagster runs (catalog, hour, day, month) and real dbt builds over one
hour of hand-made events of cus_b (plan ``pro`` of ``tests/fixtures/catalog_e2e``, whose card
is exactly half the plan's prices), with a card that also names ``claude-sonnet-4-5`` by an
alias. Every expected number is worked out in the comments.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import boto3
import duckdb
import pytest
from dagster import AssetCheckSeverity, DagsterEventType, DagsterInstance, EventRecordsFilter

from orchestration.definitions import build_defs
from orchestration.defs.rating.provider_card import read_card
from orchestration.runner import run_period
from tests import pipeline_data as data
from tools.provider_card import write_card

# Every test reads the runs of the costed fixture (a catalog run and 11 hours at every grain).
pytestmark = pytest.mark.slow

CATALOG_DIR = Path(__file__).parent / "fixtures" / "catalog_e2e"
AS_OF = {"tokenbill/as_of": "2026-11-10T00:00:00"}
D = Decimal

# Plan pro: claude-sonnet-4* uncached input 3.00 and output 15.00 per 1M tokens; the card:
# claude-sonnet-4-5 at half (1.5 and 7.5 per 1M), also named claude-sonnet-4-5-20250929.
#  - claude-sonnet-4-5-20250929 (the alias): 1000 in, 100 out -> revenue 0.003 + 0.0015,
#    cost 0.0015 + 0.00075;
#  - claude-sonnet-4-7 (priced by the plan's pattern, not on the card): 2000 in, 200 out ->
#    revenue 0.006 + 0.003, cost unknown;
#  - claude-sonnet-4-5 sent without a provider: 500 in, 50 out -> revenue 0.0015 + 0.00075,
#    cost unknown (the card is keyed by provider and model).
EVENTS = [
    data.event(
        "c1", "2026-10-05T10:10:00Z", "cus_b", provider="anthropic",
        model="claude-sonnet-4-5-20250929", input_tokens=1000, output_tokens=100,
    ),
    data.event(
        "c2", "2026-10-05T10:20:00Z", "cus_b", provider="anthropic",
        model="claude-sonnet-4-7", input_tokens=2000, output_tokens=200,
    ),
    data.event(
        "c3", "2026-10-05T10:30:00Z", "cus_b", provider=None,
        model="claude-sonnet-4-5", input_tokens=500, output_tokens=50,
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def costed(tmp_path_factory, s3_endpoint):
    root = tmp_path_factory.mktemp("provider_cost")
    catalog = root / "catalog"
    shutil.copytree(CATALOG_DIR, catalog)
    card = read_card(catalog / "provider_costs.csv")
    for row in card:
        if row["model"] == "claude-sonnet-4-5":
            row["aliases"] = "claude-sonnet-4-5-20250929"
    write_card(catalog / "provider_costs.csv", card)

    bucket = f"tb-{root.name.replace('_', '-').lower()}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    events = [{k: v for k, v in e.items() if v is not None} for e in EVENTS]
    data.upload(client, bucket, {"dt=2026-10-05/hour=10/a.jsonl": data.jsonl(*events)})

    warehouse = str(root / "warehouse.duckdb")
    defs = build_defs(
        bucket=bucket, prefix=data.PREFIX, warehouse_path=warehouse, catalog_dir=str(catalog)
    )
    (root / "home").mkdir()
    instance = DagsterInstance.local_temp(str(root / "home"))
    start = datetime(2026, 10, 5, 10, tzinfo=UTC)
    runs = run_period(defs, start, start.replace(hour=11), instance, tags=AS_OF)
    return warehouse, instance, runs


def query(warehouse: str, sql: str) -> list[tuple]:
    with duckdb.connect(warehouse, read_only=True) as con:
        return con.sql(sql).fetchall()


def check_results(instance) -> dict[tuple[str, str], object]:
    records = instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    )
    results = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        results[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = evaluation
    return results


def test_the_runs_succeed_although_costs_are_unknown(costed):
    _, _, runs = costed
    assert [r.result.success for r in runs] == [True, True, True, True]


def test_unknown_provider_cost_is_null_not_zero_in_rated_charges(costed):
    warehouse, _, _ = costed
    assert query(
        warehouse,
        "select provider, model, meter, quantity, amount, provider_cost, has_provider_cost "
        "from marts.fct_rated_charges_hourly order by model, provider, meter",
    ) == [
        (None, "claude-sonnet-4-5", "output", 50, D("0.00075"), None, False),
        (None, "claude-sonnet-4-5", "uncached_input", 500, D("0.0015"), None, False),
        ("anthropic", "claude-sonnet-4-5-20250929", "output", 100, D("0.0015"), D("0.00075"), True),
        ("anthropic", "claude-sonnet-4-5-20250929", "uncached_input", 1000, D("0.003"), D("0.0015"),
         True),
        ("anthropic", "claude-sonnet-4-7", "output", 200, D("0.003"), None, False),
        ("anthropic", "claude-sonnet-4-7", "uncached_input", 2000, D("0.006"), None, False),
    ]  # fmt: skip
    for table in ("fct_rated_charges_daily", "fct_rated_charges_monthly"):
        assert query(
            warehouse,
            f"select model, sum(amount), sum(provider_cost) from marts.{table} "
            "group by model order by model",
        ) == [
            ("claude-sonnet-4-5", D("0.00225"), None),
            ("claude-sonnet-4-5-20250929", D("0.0045"), D("0.00225")),
            ("claude-sonnet-4-7", D("0.009"), None),
        ]


def test_margin_of_unknown_cost_is_null_and_its_revenue_is_shown(costed):
    warehouse, _, _ = costed
    assert query(
        warehouse,
        "select model, revenue, provider_cost, gross_margin, failed_attempt_provider_cost, "
        "unpriced_provider_cost, revenue_with_unknown_cost from marts.fct_margin_monthly "
        "order by model",
    ) == [
        ("claude-sonnet-4-5", D("0.00225"), None, None, D(0), D(0), D("0.00225")),
        ("claude-sonnet-4-5-20250929", D("0.0045"), D("0.00225"), D("0.00225"), D(0), D(0), D(0)),
        ("claude-sonnet-4-7", D("0.009"), None, None, D(0), D(0), D("0.009")),
    ]
    # The month's share of revenue without a known cost: (0.00225 + 0.009) / 0.01575.
    assert query(
        warehouse,
        "select sum(revenue), sum(revenue_with_unknown_cost) from marts.fct_margin_monthly",
    ) == [(D("0.01575"), D("0.01125"))]


def test_warn_checks_fail_naming_the_models_without_cost(costed):
    _, instance, _ = costed
    results = check_results(instance)
    hourly = results[("marts/fct_rated_charges_hourly", "provider_cost_is_known")]
    assert (hourly.passed, hourly.severity) == (False, AssetCheckSeverity.WARN)
    assert hourly.metadata["dagster_dbt/failed_row_count"].value == 2
    assert hourly.metadata["failing_rows"].value == (
        "| provider | model | rows_without_cost |\n|---|---|---|\n"
        "| anthropic | claude-sonnet-4-7 | 2 |\n| None | claude-sonnet-4-5 | 2 |"
    )
    margin = results[("marts/fct_margin_monthly", "margin_cost_is_known")]
    assert (margin.passed, margin.severity) == (False, AssetCheckSeverity.WARN)
    assert margin.metadata["failing_rows"].value == (
        "| model | rows_without_cost |\n|---|---|\n"
        "| claude-sonnet-4-5 | 1 |\n| claude-sonnet-4-7 | 1 |"
    )
    # Everything else holds: the reconciliations carry the unknown cost as unknown.
    failed = {key for key, evaluation in results.items() if not evaluation.passed}
    assert failed == {
        ("marts/fct_rated_charges_hourly", "provider_cost_is_known"),
        ("marts/fct_margin_monthly", "margin_cost_is_known"),
    }
