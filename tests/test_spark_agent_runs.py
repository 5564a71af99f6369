"""The agent-run models (models/agent_runs) on Apache Spark (issue #16): the same input built on
DuckDB and on a local Spark (dbt-spark, session mode, in this process: Spark starts once), the
rows of each model compared exactly (same rows, exact decimals).

The input is the demo catalog (catalog/) and a few dozen hand-made attempts of its customers:
agent runs of several calls, calls retried (on another model too), failed, retried and
cancelled attempts, a run across midnight, attempts without a trace or request group id (a
run of their own), the enterprise plan's package price (requests, per started 1,000), a
model no price names (unpriced usage) and a November month. The story, alike on both engines:
all of history built; then a late attempt lands (a second raw file) that makes a run start a
day earlier, and that day is rebuilt with the hourly ancestors (DuckDB: delete+insert of the
touched runs; Spark: the run marts' days overwritten, the run moves from one day's partition to
another's); then October is rebuilt (the monthly retry waste, a month's partition).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import duckdb
import pytest
from dagster import TimeWindow

from orchestration.defs.dbt.args import BUILD_ARGS, dbt_build_env
from orchestration.defs.dbt.project import DBT_PROJECT_DIR
from tests.dbt_support import dbt, landing_tables, query, raw_events
from tests.test_spark_dbt import _export_lake, _load_catalog

pytestmark = pytest.mark.slow
pyspark = pytest.importorskip("pyspark", reason="the Spark extra: pip install -e '.[spark]'")

MODELS = [
    "int_agent_runs__attempt_costs",
    "fct_agent_run_costs",
    "fct_request_costs",
    "fct_retry_waste_monthly",
]
AGENT_RUNS = "path:models/agent_runs"
# The attempt costs' ancestors (staging, catalog, the hourly rating models).
ANCESTORS = "+int_agent_runs__attempt_costs"
OCT20 = TimeWindow(datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 10, 21, tzinfo=UTC))
OCTOBER = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
AS_OF = "2026-11-05T00:00:00"


def _attempt(customer, ts, model, status="success", attempt=1, trace=None, group=None, **extra):
    """A raw line of an attempt (raw_events: the output tokens are its third element)."""
    provider = "openai" if model.startswith("gpt") or model == "mystery-model" else "anthropic"
    row = {
        "provider": provider,
        "model": model,
        "status": status,
        "attempt": attempt,
        "trace_id": trace,
        "request_group_id": group,
        "feature": "agent",
        "environment": "production",
        "input_tokens": 1_200,
        **extra,
    }
    return (customer, ts, row.pop("output_tokens", 300), row)


D21 = datetime(2026, 10, 21)
D14 = datetime(2026, 10, 14, 23, 58)
D16 = datetime(2026, 10, 16, 9)
SONNET, HAIKU = "claude-sonnet-4-5", "claude-haiku-4-5"
# (customer, time, model, status, attempt, trace id, request group id, other columns)
ATTEMPTS = [
    # cus_0002 (enterprise: the package requests price): run t1 starts Oct 21 00:30; its call
    # g1 fails, is retried and succeeds on another model; its call g2 is long-context.
    ("cus_0002", D21 + timedelta(minutes=30), SONNET, "failed", 1, "t1", "g1", {}),
    ("cus_0002", D21 + timedelta(minutes=31), SONNET, "retried", 2, "t1", "g1",
     {"cached_input_tokens": 400}),
    ("cus_0002", D21 + timedelta(minutes=32), HAIKU, "success", 3, "t1", "g1", {}),
    ("cus_0002", D21 + timedelta(hours=1, minutes=10), SONNET, "success", 1, "t1", "g2",
     {"input_tokens": 230_000}),
    # cus_0001 (starter): run t2 across midnight, a failed call retried, a cancelled one.
    ("cus_0001", D14, "gpt-4o", "failed", 1, "t2", "g3", {}),
    ("cus_0001", D14 + timedelta(minutes=3), "gpt-4o", "success", 2, "t2", "g3", {}),
    ("cus_0001", D14 + timedelta(minutes=7), "gpt-4o-mini", "cancelled", 1, "t2", "g4", {}),
    # cus_0035 (cost-plus): a model no card prices: unpriced, unknown provider cost.
    ("cus_0035", D16 + timedelta(minutes=5), "mystery-model", "failed", 1, "t3", "g5", {}),
    ("cus_0035", D16 + timedelta(minutes=6), "mystery-model", "success", 2, "t3", "g5", {}),
    ("cus_0035", D16 + timedelta(minutes=7), "gpt-4o", "success", 1, "t3", "g6", {}),
    # without trace or request group: runs and requests of their own
    ("cus_0008", datetime(2026, 10, 18, 15, 1), SONNET, "success", 1, None, None,
     {"output_tokens": 9_000}),
    ("cus_0008", datetime(2026, 10, 18, 15, 2), SONNET, "failed", 1, None, None, {}),
    # cus_0002's first calls of October, one hour, model and status: one rated row of 3
    # requests, which the package price bills 0.50 (a started block of 1,000), shared by 3.
    *[("cus_0002", datetime(2026, 10, 1, 0, m), SONNET, "success", 1, None, None, {})
      for m in (10, 20, 30)],
    # November: another month of the retry waste
    ("cus_0001", datetime(2026, 11, 2, 10, 1), "gpt-4o", "retried", 1, "t4", "g7", {}),
    ("cus_0001", datetime(2026, 11, 2, 10, 2), "gpt-4o", "success", 2, "t4", "g7", {}),
]  # fmt: skip


def _events():
    """The hand-made attempts and seeded runs of 1 to 3 calls of 1 to 3 attempts each, some
    across midnight. No run but t1 starts on Oct 21: when the late attempt moves t1 to Oct
    20, Spark's build produces no run of Oct 21, whose stored day must still be emptied."""
    events = [_attempt(c, ts, m, s, a, t, g, **x) for c, ts, m, s, a, t, g, x in ATTEMPTS]
    rng = random.Random(16)
    callers = [("cus_0002", [SONNET, HAIKU]), ("cus_0001", ["gpt-4o", "gpt-4o-mini"]),
               ("cus_0013", ["gpt-4o"])]  # fmt: skip
    for run in range(12):
        customer, models = rng.choice(callers)
        # few hours (each is a partition of the hourly models on Spark: listing them is the
        # build's cost), none on Oct 21 (the late attempt must leave that day without runs)
        day = datetime(2026, 10, rng.choice([13, 14, 25]), rng.choice([22, 23]))
        start = day + timedelta(minutes=rng.randrange(50))
        for call in range(rng.randrange(1, 4)):
            for attempt in range(1, rng.randrange(1, 4) + 1):
                extra = {
                    "feature": rng.choice(["agent", "search", None]),
                    "input_tokens": rng.choice([0, 800, 15_000]),
                    "output_tokens": rng.randrange(1, 4_000),
                }
                status = rng.choice(["success", "failed", "retried", "cancelled"])
                ts = start + timedelta(minutes=30 * call + attempt)
                group = f"r{run}-c{call}"
                model = rng.choice(models)
                events.append(
                    _attempt(customer, ts, model, status, attempt, f"r{run}", group, **extra)
                )
    return raw_events(events)


def _late_event():
    """A late first call of run t1, at Oct 20 23:50: the run now starts a day earlier."""
    late = _attempt("cus_0002", datetime(2026, 10, 20, 23, 50), SONNET, "success", 1, "t1", "g0",
                    event_id="late-1", source_key="late")  # fmt: skip
    return raw_events([late])


def _duckdb(warehouse, target, window, *args) -> None:
    result = dbt(target, *args, warehouse=warehouse, env=dbt_build_env(window, {"as_of": AS_OF}))
    assert result.returncode == 0, result.stdout[-4000:]


# Each step of the story: (window, dbt args), the same on both engines.
STEPS = [
    (None, ["run", "--select", ANCESTORS, "--exclude", AGENT_RUNS]),
    (None, [*BUILD_ARGS, "--select", AGENT_RUNS]),
    # the late attempt lands here
    (OCT20, ["run", "--select", ANCESTORS]),
    (OCT20, [*BUILD_ARGS, "--select", "fct_agent_run_costs", "fct_request_costs"]),
    (OCTOBER, [*BUILD_ARGS, "--select", AGENT_RUNS]),
]
LATE_STEP = 2


def _window_vars(window: TimeWindow | None) -> dict[str, str]:
    if window is None:
        return {"as_of": AS_OF}
    return {"as_of": AS_OF, "window_start": f"{window.start:%Y-%m-%dT%H:%M:%S}",
            "window_end": f"{window.end:%Y-%m-%dT%H:%M:%S}"}  # fmt: skip


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from dbt.cli.main import dbtRunner

    root = tmp_path_factory.mktemp("spark_agent_runs")
    warehouse = str(root / "warehouse.duckdb")
    target = root / "target-duckdb"
    landing_tables(warehouse)
    _load_catalog(warehouse)
    with duckdb.connect(warehouse) as con:
        con.register("rows", _events().to_arrow())
        con.execute("insert into raw.usage_events by name select * from rows")
    lake = root / "lake"
    _export_lake(warehouse, lake)
    # Written beside the lake, moved into it before Spark's late step.
    late_file = root / "late.parquet"
    for i, (window, args) in enumerate(STEPS):
        if i == LATE_STEP:
            with duckdb.connect(warehouse) as con:
                con.execute("set TimeZone = 'UTC'")
                con.register("late", _late_event().to_arrow())
                con.execute("insert into raw.usage_events by name select * from late")
                con.execute(
                    "copy (select * replace (cast(partition_hour as timestamptz) as"
                    " partition_hour, cast(event_ts as timestamptz) as event_ts)"
                    " from raw.usage_events where event_id = 'late-1')"
                    f" to '{late_file}' (format parquet)"
                )
        _duckdb(warehouse, target, window, *args)

    spark_warehouse = root / "spark"
    saved = {k: os.environ.get(k) for k in ("TOKENBILL_SPARK_WAREHOUSE", "TZ", "DO_NOT_TRACK")}
    os.environ.update(TOKENBILL_SPARK_WAREHOUSE=str(spark_warehouse), TZ="UTC", DO_NOT_TRACK="1")
    common = ["--target", "spark", "--profiles-dir", str(DBT_PROJECT_DIR)]
    common += ["--project-dir", str(DBT_PROJECT_DIR), "--target-path", str(root / "target-spark")]
    sources = ["run-operation", "create_lake_sources", *common, "--vars", f"lake_root: '{lake}'"]
    failures = []
    try:
        runner = dbtRunner()
        created = runner.invoke(sources)
        assert created.success, created.exception
        for i, (window, args) in enumerate(STEPS):
            if i == LATE_STEP:
                late_file.rename(lake / "raw" / "usage_events" / "part-late.parquet")
                refreshed = runner.invoke(sources)
                assert refreshed.success, refreshed.exception
            built = runner.invoke([*args, *common, "--vars", json.dumps(_window_vars(window))])
            if built.result is None:
                failures.append(f"step {i}: {built.exception!r}")
                continue
            failures += [
                f"step {i}: {r.node.name}: {r.status}: {r.message}"
                for r in built.result
                if str(r.status) not in ("success", "pass", "no-op")
            ]
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
        yield warehouse, spark, failures
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(spark_warehouse, ignore_errors=True)


def _value(value):
    """A map as its sorted items (DuckDB and Spark return dicts, maybe in another order)."""
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


def _rows(rows) -> list[tuple]:
    return sorted((tuple(_value(v) for v in r) for r in rows), key=repr)


def test_the_agent_run_models_and_their_tests_build_on_spark(engines):
    *_, failures = engines
    assert failures == []


@pytest.mark.parametrize("model", MODELS)
def test_the_agent_run_model_has_the_same_rows_on_spark_as_on_duckdb(engines, model):
    warehouse, spark, _ = engines
    relation = f"marts.{model}"
    duck_columns = [r[0] for r in query(warehouse, f"describe {relation}")]
    frame = spark.table(relation)
    # The same columns; the run marts' day partition (first_event_date) is Spark's only, and
    # Spark stores a partition column last.
    assert sorted(set(frame.columns) - {"first_event_date"}) == sorted(duck_columns)
    columns = ", ".join(f'"{c}"' for c in duck_columns)
    duck = _rows(query(warehouse, f"select {columns} from {relation}"))
    on_spark = _rows(frame.select(*duck_columns).collect())
    assert duck, f"{model} is empty: the comparison would prove nothing"
    assert on_spark == duck


def test_the_late_attempt_moved_its_run_to_the_earlier_day(engines):
    warehouse, spark, _ = engines
    [(attempts, first, billed)] = query(
        warehouse,
        "select attempts, first_event_at, billed_amount from marts.fct_agent_run_costs"
        " where run_id = 't1'",
    )
    assert (attempts, first) == (5, datetime(2026, 10, 20, 23, 50))
    assert billed is not None and billed > Decimal(0)
    rows = spark.sql(
        "select first_event_date, attempts from marts.fct_agent_run_costs where run_id = 't1'"
    ).collect()
    assert [tuple(r) for r in rows] == [(datetime(2026, 10, 20).date(), 5)]


def test_the_package_price_and_unpriced_usage_reach_the_attempts(engines):
    warehouse, *_ = engines
    # The enterprise plan's package price: Oct 1's 3 requests are one rated row of 0.50; its
    # attempts share each of the hour's rated rows (tokens and requests) in thirds, truncated
    # to 18 decimals: they add up to the hour's amount, short by less than 1e-18 per row.
    [(quantity, amount)] = query(
        warehouse,
        "select quantity, amount from marts.fct_rated_charges_hourly where customer_id ="
        " 'cus_0002' and usage_hour = '2026-10-01 00:00' and meter = 'requests'",
    )
    assert (quantity, amount) == (3, Decimal("0.5"))
    [(rows, hour_amount)] = query(
        warehouse,
        "select count(*), sum(amount) from marts.fct_rated_charges_hourly where customer_id ="
        " 'cus_0002' and usage_hour = '2026-10-01 00:00'",
    )
    shares = query(
        warehouse,
        "select billed_amount from marts.int_agent_runs__attempt_costs where customer_id ="
        " 'cus_0002' and usage_hour = '2026-10-01 00:00'",
    )
    assert len(shares) == 3 and len(set(shares)) == 1
    short = hour_amount - sum(share for (share,) in shares)
    assert Decimal(0) <= short < rows * Decimal("1e-18") * 3
    # A model no card prices (cost-plus): unknown provider cost; the failed attempt is not
    # billed (0), the successful one is unpriced (null, flagged, never 0).
    assert query(
        warehouse,
        "select event_id, status, provider_cost, billed_amount, has_unpriced_usage"
        " from marts.int_agent_runs__attempt_costs where run_id = 't3' order by event_ts",
    ) == [
        ("e7", "failed", None, Decimal(0), False),
        ("e8", "success", None, None, True),
        ("e9", "success", Decimal("0.006"), Decimal("0.0075"), False),
    ]
    [(calls, by_model, retries, billed)] = query(
        warehouse,
        "select model_calls, model_calls_by_model, retries, billed_amount"
        " from marts.fct_agent_run_costs where run_id = 't1'",
    )
    assert (calls, by_model, retries) == (3, {HAIKU: 1, SONNET: 3}, 2)
    [(attempts_billed,)] = query(
        warehouse,
        "select sum(billed_amount) from marts.int_agent_runs__attempt_costs where run_id = 't1'",
    )
    assert billed == attempts_billed
