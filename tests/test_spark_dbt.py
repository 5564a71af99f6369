"""The same dbt project on Apache Spark (issue #16): one fixture builds the project on DuckDB,
copies every source table of that warehouse into a Parquet lake (the layout of SPARK.md), builds
the same models on a local Spark (dbt-spark, session mode, in this process: Spark starts once)
and each test compares one model's rows on both engines exactly (same rows, exact decimals).

The input is the repository's demo catalog (catalog/: plans with per-unit, graduated, volume,
package and cost-plus prices, a plan change, an override, a spend cap, quota limits, JPY,
wallets with grants and top-ups) and a few hundred hand-made events of its customers on eight
days (one hour each: every hour is a partition on Spark) over a month boundary, plus customers
and models it does not know (unpriced usage). Both engines build the whole project but the
folders NOT_YET, with every data test, over all of history and then incrementally for October
(each engine's window replacement), invoices judged at one fixed as_of, then November's close
a month later (held by its unpriced usage: a singular test fails alike). The wallet ledger is
Python's (the wallet_ledger asset): booked once on DuckDB between two builds, it is a source
of the Spark build like the raw events.

Spark is one session for the module: the full build with the unit tests, October's build of
the tables (views read their inputs live) with their data tests, November's close of the
invoicing models, and the failing all_usage_is_priced alone (each build after the lake's
run-operation).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster import TimeWindow

from orchestration.defs.dbt.args import BUILD_ARGS, dbt_build_env
from orchestration.defs.dbt.project import DBT_PROJECT_DIR
from tests.dbt_support import dbt, landing_tables, query, raw_events

pytestmark = pytest.mark.slow
pyspark = pytest.importorskip("pyspark", reason="the Spark extra: pip install -e '.[spark]'")

# The models built on both engines, per folder; each is compared whole. Every model that is not
# ephemeral, but for the folders NOT_YET (test_every_model_is_compared).
MODELS = {
    "staging": ["stg_tokenbill__usage_events"],
    "marts": ["fct_token_usage_hourly", "fct_token_usage_daily", "fct_token_usage_monthly"],
    "catalog": [
        "dim_customers",
        "dim_plans",
        "dim_price_tiers",
        "dim_prices",
        "dim_provider_costs",
        "dim_quota_limits",
        "dim_spend_caps",
        "dim_subscriptions",
    ],
    "wallets": [
        "int_wallets__draw_inputs",
        "fct_wallet_ledger",
        "fct_wallet_balances",
        "fct_wallet_credits",
        "fct_wallet_reconciliation",
        "fct_wallet_runway",
        "fct_usage_spikes",
        "fct_billing_alerts",
    ],
    "invoicing": [
        "int_invoicing__period_usage",
        "int_invoicing__computed_lines",
        "fct_invoice_holds",
        "fct_finalized_invoice_lines",
        "fct_invoice_adjustments",
        "fct_invoice_line_items",
        "fct_invoices",
    ],
    "rating": [
        "int_rating__priced_usage",
        "fct_rated_charges_hourly",
        "fct_rated_charges_daily",
        "fct_rated_charges_monthly",
        "fct_unpriced_usage",
        "fct_margin_monthly",
        "fct_subscription_fees",
        "fct_quota_usage",
    ],
}
# models/agent_runs is ported to Spark by task S2 (branch hG): once it is merged, AGENT_RUNS
# joins MODELS and NOT_YET is empty (the folders left out of both engines' builds).
AGENT_RUNS_ON_SPARK = True
AGENT_RUNS = [
    "int_agent_runs__attempt_costs",
    "fct_request_costs",
    "fct_agent_run_costs",
    "fct_retry_waste_monthly",
]
if AGENT_RUNS_ON_SPARK:
    MODELS["agent_runs"] = AGENT_RUNS
NOT_YET = [] if AGENT_RUNS_ON_SPARK else ["agent_runs"]
FOLDERS = list(MODELS)
COMPARED = [m for folder in FOLDERS for m in MODELS[folder]]
SCHEMA = {"stg_tokenbill__usage_events": "staging"}
SPARK_ONLY_COLUMNS = {"first_event_date"}
# What the Spark build selects: the compared folders (their tests come with them).
SELECT = [f"path:models/{folder}" for folder in FOLDERS]
# The data test that fails on unpriced usage (an ERROR check in Dagster), which this input has
# on purpose: left out of the builds and run alone (test_unpriced_usage_fails_alike).
UNPRICED_TEST = "all_usage_is_priced"
EXCLUDE = [*(f"path:models/{folder}" for folder in NOT_YET), UNPRICED_TEST]

# The token-usage scenario crosses the November/December boundary: its customers and model are
# unknown to the catalog (unpriced usage), which holds the close of a period that is due, so it
# stays in periods still drafts at AS_OF.
T0 = datetime(2026, 11, 30, 22)
# The first build's window: every event (Oct 12 to Dec 2, 02:00). Invoicing bills the periods
# that start in a window's first month: October's.
HISTORY = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC))
OCTOBER = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
NOVEMBER = TimeWindow(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
# Invoices are judged at this moment on both engines: October is past its grace period
# (finalized). November's close is judged at AS_OF_CLOSE, past its grace period: its unpriced
# usage holds it (fct_invoice_holds) and close_has_no_unpriced_usage fails, alike.
AS_OF = "2026-11-05T00:00:00"
AS_OF_CLOSE = "2026-12-05T00:00:00"
CLOSE_TEST = "close_has_no_unpriced_usage"
# November's close builds the invoicing models and what reads them.
CLOSE_SELECT = ["fct_subscription_fees+", "path:models/invoicing+"]

# Customers of the demo catalog and what they call: (customer, provider, models).
CALLERS = [
    ("cus_0001", "openai", ["gpt-4o", "gpt-4o-mini"]),  # starter
    ("cus_0002", "anthropic", ["claude-sonnet-4-5", "claude-haiku-4-5"]),  # enterprise, wallet
    ("cus_0003", "openai", ["gpt-4o"]),  # starter, then pro from Oct 16
    ("cus_0003", "anthropic", ["claude-sonnet-4-5"]),
    ("cus_0008", "anthropic", ["claude-sonnet-4-5"]),  # pro: graduated output
    ("cus_0010", "aws.bedrock", ["anthropic.claude-sonnet-4-5-20250929-v1:0"]),  # override
    ("cus_0013", "openai", ["gpt-4o", "gpt-4o-mini"]),  # quota limits
    ("cus_0032", "openai", ["gpt-4o-mini"]),  # pro-jpy, wallet
    ("cus_0035", "openai", ["gpt-4o"]),  # cost-plus
]
# Unpriced usage, in November only (see T0): a model no card prices under a cost-plus price, a
# customer the catalog does not know.
UNPRICED_CALLERS = [("cus_0035", "openai", ["mystery-model"]), ("acme", "openai", ["gpt-4o"])]


def _token_usage_events():
    """Two customers over a month boundary and a day boundary, every dimension varied, a
    long-context call and optional subsets (the token-usage marts' scenario)."""
    return [
        ("acme", T0 + timedelta(minutes=5), 10, {"feature": "chat", "input_tokens": 100}),
        ("acme", T0 + timedelta(minutes=6), 20, {"feature": "chat", "input_tokens": 50}),
        ("acme", T0 + timedelta(hours=1, minutes=1), 7, {"plan": "pro", "status": "failed"}),
        (
            "acme",
            T0 + timedelta(hours=2, minutes=59),
            3,
            {"input_tokens": 250_000, "cached_input_tokens": 1_000, "cache_write_tokens": 9},
        ),
        (
            "globex",
            T0 + timedelta(days=1, hours=3),
            1_000_000_000,
            {"environment": "staging", "reasoning_tokens": 5, "cache_write_5m_tokens": 2},
        ),
        ("globex", T0 + timedelta(days=1, hours=4), 1, {"subscription_id": "s1", "attempt": 2}),
    ]


# The days of the catalog's calls, each at one hour (9:00 UTC): every hour is a partition of the
# hourly marts on Spark and each read of one lists its partitions, so few hours keep the test
# fast. Before and after cus_0003's plan change (Oct 16), across October's end.
DAYS = [datetime(2026, 10, d, 9) for d in (12, 15, 16, 20, 24, 28, 31)] + [datetime(2026, 11, 2, 9)]


def _catalog_events():
    """A few hundred calls of the catalog's customers on DAYS (seeded), and a big spender past
    its spend cap (cus_0040, max_spend 20 USD: 6 x 300k output tokens of claude-sonnet-4-5)."""
    rng = random.Random(16)
    events = []
    for _ in range(360):
        customer, provider, models = rng.choice(CALLERS + UNPRICED_CALLERS)
        day = rng.choice(DAYS)
        if (customer, provider, models) in UNPRICED_CALLERS:
            day = DAYS[-1]
        ts = day + timedelta(minutes=rng.randrange(60), seconds=rng.randrange(60))
        input_tokens = rng.choice([0, 120, 1_500, 12_000, 230_000])
        cached = rng.choice([0, 0, input_tokens // 3])
        written = rng.choice([0, 0, (input_tokens - cached) // 4])
        output = rng.randrange(1, 6_000)
        extra = {
            "provider": provider,
            "model": rng.choice(models),
            "feature": rng.choice(["chat", "search", None]),
            "environment": rng.choice(["production", "staging"]),
            "status": rng.choice(["success"] * 8 + ["failed", "retried"]),
            "input_tokens": input_tokens,
            "cached_input_tokens": cached,
            "cache_write_tokens": written,
            "reasoning_tokens": rng.choice([None, output // 5]),
        }
        events.append((customer, ts, output, extra))
    for day in DAYS[1:-1]:
        extra = {"provider": "anthropic", "model": "claude-sonnet-4-5", "input_tokens": 40_000}
        events.append(("cus_0040", day + timedelta(minutes=30), 300_000, extra))
    return events


def _late_event():
    """An October call that lands after October's invoice was finalized: an adjustment line on
    the November draft (fct_invoice_adjustments)."""
    extra = {"event_id": "late-1", "source_key": "late", "provider": "anthropic",
             "model": "claude-sonnet-4-5", "input_tokens": 5_000}  # fmt: skip
    return raw_events([("cus_0008", datetime(2026, 10, 20, 9, 15), 2_500, extra)])


def _events():
    """The events, and a resend of the first one hour later from another object: dropped."""
    import polars as pl

    frame = raw_events(_token_usage_events() + _catalog_events())
    resend = frame.head(1).with_columns(
        pl.col("partition_hour") + timedelta(hours=1),
        pl.lit("k2").alias("source_key"),
    )
    return pl.concat([frame, resend], how="diagonal_relaxed")


def _load_catalog(warehouse: str) -> None:
    """The demo catalog, its provider cost card and wallets, as the pricing_catalog asset
    writes them."""
    from orchestration.defs.rating.catalog import catalog_tables, load_catalog_dir, write_catalog
    from orchestration.defs.wallets.catalog import wallet_tables

    loaded = load_catalog_dir(DBT_PROJECT_DIR.parent / "catalog")
    with duckdb.connect(warehouse) as con:
        write_catalog(con, catalog_tables(loaded.catalog, loaded.provider_costs))
        write_catalog(con, wallet_tables(loaded.wallets))


def _book_ledger(warehouse: str) -> None:
    """October and November of the wallet ledger, as the wallet_ledger asset books them."""
    from orchestration.defs.wallets.booking import book_month

    with duckdb.connect(warehouse) as con:
        for start, end in ((datetime(2026, 10, 1), datetime(2026, 11, 1)),
                           (datetime(2026, 11, 1), datetime(2026, 12, 1))):  # fmt: skip
            con.execute("begin transaction")
            book_month(con, start, end)
            con.execute("commit")


def _build_duckdb(warehouse: str, target: Path, window: TimeWindow, *select: str,
                  as_of: str = AS_OF) -> list[tuple[str, str, int]]:  # fmt: skip
    """The build's failures on DuckDB: (test, status, failing rows)."""
    env = dbt_build_env(window, {"as_of": as_of})
    selected = ["--select", *select] if select else []
    dbt(target, *BUILD_ARGS, *selected, "--exclude", *EXCLUDE, warehouse=warehouse, env=env)
    results = json.loads((target / "run_results.json").read_text())["results"]
    return [
        (r["unique_id"].split(".")[2], r["status"], r["failures"])
        for r in results
        if r["status"] not in ("success", "pass", "warn", "no-op")
    ]


def _export_lake(warehouse: str, lake: Path) -> None:
    """Every source table of the DuckDB warehouse as Parquet under lake/{schema}/{table}/
    (SPARK.md): timestamps written as UTC instants (isAdjustedToUTC), as the lake stores them."""
    with duckdb.connect(warehouse, read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables"
            " where table_schema in ('raw', 'catalog', 'wallet', 'billing')"
            " and table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table in tables:
            columns = con.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = ? and table_name = ? order by ordinal_position",
                [schema, table],
            ).fetchall()
            select = ", ".join(
                f'cast("{c}" as timestamptz) as "{c}"' if t == "TIMESTAMP" else f'"{c}"'
                for c, t in columns
            )
            target = lake / schema / table
            target.mkdir(parents=True)
            con.execute(
                f"copy (select {select} from {schema}.{table})"
                f" to '{target / 'part-0.parquet'}' (format parquet)"
            )


def _spark_build(runner, common: list[str], run_vars: dict[str, str], *select: str):
    """``dbt build`` of ``select`` on Spark, its unit tests included: the failures (each node
    that neither succeeded nor passed; a WARN test, such as margin_cost_is_known on the
    unknown model's usage, warns alike on DuckDB) and the unit tests' statuses."""
    args = ["build", "--indirect-selection", "buildable", *common]
    built = runner.invoke([*args, "--select", *select, "--exclude", *EXCLUDE,
                           "--vars", json.dumps(run_vars)])  # fmt: skip
    if built.result is None:
        return [repr(built.exception)], {}
    failed = [
        (r.node.name, str(r.status), r.failures)
        for r in built.result
        if str(r.status) not in ("success", "pass", "warn", "no-op")
    ]
    unit = {r.node.name: str(r.status) for r in built.result if r.node.resource_type == "unit_test"}
    return failed, unit


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """Both engines through the same story: the hourly models the ledger reads, the wallet
    ledger booked (Python, DuckDB), all of history built (October's invoices finalized at
    AS_OF), a late October event, then October rebuilt (its adjustment booked), then
    November's close at AS_OF_CLOSE (held by its unpriced usage). Spark gets DuckDB's sources
    as a lake, the late event as a second file of raw.usage_events."""
    from dbt.cli.main import dbtRunner

    root = tmp_path_factory.mktemp("spark_dbt")
    warehouse = str(root / "warehouse.duckdb")
    target = root / "target-duckdb"
    landing_tables(warehouse)
    _load_catalog(warehouse)
    with duckdb.connect(warehouse) as con:
        con.register("rows", _events().to_arrow())
        con.execute("insert into raw.usage_events by name select * from rows")
    ledger_inputs = dbt(
        target, *BUILD_ARGS, "--select", "+int_wallets__draw_inputs", "--exclude", *EXCLUDE,
        warehouse=warehouse, env=dbt_build_env(None, {"as_of": AS_OF}),
    )  # fmt: skip
    assert ledger_inputs.returncode == 0, ledger_inputs.stdout[-4000:]
    _book_ledger(warehouse)
    assert _build_duckdb(warehouse, target, HISTORY) == []
    lake = root / "lake"
    _export_lake(warehouse, lake)
    with duckdb.connect(warehouse) as con:
        con.execute("set TimeZone = 'UTC'")
        con.register("late", _late_event().to_arrow())
        con.execute("insert into raw.usage_events by name select * from late")
        # Written beside the lake; moved into it after Spark's first build.
        late_file = root / "late.parquet"
        con.execute(
            "copy (select * replace (cast(partition_hour as timestamptz) as partition_hour,"
            " cast(event_ts as timestamptz) as event_ts) from raw.usage_events"
            f" where event_id = 'late-1') to '{late_file}' (format parquet)"
        )
    assert _build_duckdb(warehouse, target, OCTOBER) == []
    close = _build_duckdb(warehouse, target, NOVEMBER, *CLOSE_SELECT, as_of=AS_OF_CLOSE)
    dbt(
        target, "test", "--select", UNPRICED_TEST, warehouse=warehouse,
        env=dbt_build_env(None, {"as_of": AS_OF}),
    )  # fmt: skip
    results = json.loads((target / "run_results.json").read_text())["results"]
    failures = {"duckdb": [(r["status"], r["failures"]) for r in results], "duckdb_close": close}

    spark_warehouse = root / "spark"
    saved = {k: os.environ.get(k) for k in ("TOKENBILL_SPARK_WAREHOUSE", "TZ", "DO_NOT_TRACK")}
    os.environ.update(TOKENBILL_SPARK_WAREHOUSE=str(spark_warehouse), TZ="UTC", DO_NOT_TRACK="1")
    common = ["--target", "spark", "--profiles-dir", str(DBT_PROJECT_DIR)]
    common += ["--project-dir", str(DBT_PROJECT_DIR), "--target-path", str(root / "target-spark")]
    sources = ["run-operation", "create_lake_sources", *common, "--vars", f"lake_root: '{lake}'"]
    spark = None
    try:
        runner = dbtRunner()
        created = runner.invoke(sources)
        assert created.success, created.exception
        # All of history, with the unit tests (given/expect on fixed rows) of the compared
        # folders: dbt reads their inputs' column types from Spark's relations.
        history = {
            "window_start": f"{HISTORY.start:%Y-%m-%dT%H:%M:%S}",
            "window_end": f"{HISTORY.end:%Y-%m-%dT%H:%M:%S}",
        }
        failures["build"], failures["unit"] = _spark_build(
            runner, common, {"as_of": AS_OF, **history}, *SELECT
        )
        # The late event lands in the lake (a new file, then the listing refreshed); October
        # again: its partitions are replaced (insert_overwrite), November's are left, as
        # DuckDB's delete+insert does. Views read their inputs live: only the tables are
        # rebuilt, with their data tests (DuckDB's run rebuilds every model, to the same rows).
        late_file.rename(lake / "raw" / "usage_events" / "part-late.parquet")
        refreshed = runner.invoke(sources)
        assert refreshed.success, refreshed.exception
        october = {
            "window_start": f"{OCTOBER.start:%Y-%m-%dT%H:%M:%S}",
            "window_end": f"{OCTOBER.end:%Y-%m-%dT%H:%M:%S}",
        }
        tables = [f"config.materialized:{m},{folder}" for m in ("incremental", "table")
                  for folder in SELECT]  # fmt: skip
        failed, _ = _spark_build(
            runner, [*common, "--exclude-resource-type", "unit_test"],
            {"as_of": AS_OF, **october}, *tables,
        )  # fmt: skip
        failures["build"] += failed
        november = {
            "window_start": f"{NOVEMBER.start:%Y-%m-%dT%H:%M:%S}",
            "window_end": f"{NOVEMBER.end:%Y-%m-%dT%H:%M:%S}",
        }
        failed, _ = _spark_build(
            runner, [*common, "--exclude-resource-type", "unit_test"],
            {"as_of": AS_OF_CLOSE, **november}, *CLOSE_SELECT,
        )  # fmt: skip
        failures["spark_close"] = failed
        tested = runner.invoke(["test", *common, "--select", UNPRICED_TEST])
        failures["spark"] = [(str(r.status), r.failures) for r in tested.result]
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
        yield warehouse, spark, root, failures
    finally:
        # The next module that starts Spark gets a session of its own settings (its warehouse).
        if spark is not None:
            spark.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(spark_warehouse, ignore_errors=True)


def _rows(rows) -> list[tuple]:
    return sorted((tuple(r) for r in rows), key=repr)


def test_every_model_and_data_test_builds_on_spark(engines):
    *_, failures = engines
    assert failures["build"] == []


@pytest.mark.parametrize("model", COMPARED)
def test_the_model_has_the_same_rows_on_spark_as_on_duckdb(engines, model):
    warehouse, spark, _, _ = engines
    relation = f"{SCHEMA.get(model, 'marts')}.{model}"
    duck_columns = [r[0] for r in query(warehouse, f"describe {relation}")]
    frame = spark.table(relation)
    # The same columns; Spark stores a partitioned table's partition column last; the run
    # marts' day partition (first_event_date, SPARK.md) is Spark's only.
    assert sorted(set(frame.columns) - SPARK_ONLY_COLUMNS) == sorted(duck_columns)
    columns = ", ".join(f'"{c}"' for c in duck_columns)
    duck = _rows(query(warehouse, f"select {columns} from {relation}"))
    on_spark = _rows(frame.select(*duck_columns).collect())
    assert duck, f"{model} is empty: the comparison would prove nothing"
    assert on_spark == duck


def test_every_model_is_compared(engines):
    """Every model of the project that is not ephemeral, but for the folders NOT_YET."""
    _, _, root, _ = engines
    manifest = json.loads((root / "target-spark" / "manifest.json").read_text())
    models = {
        node["name"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
        and node["config"]["materialized"] != "ephemeral"
        and node["path"].split("/")[0] not in NOT_YET
    }
    assert models == set(COMPARED)


def test_the_close_fails_alike_on_both_engines(engines):
    """November's close: held by its unpriced usage, close_has_no_unpriced_usage (a singular
    test) fails with the same rows, and nothing else does."""
    *_, failures = engines
    # What reads fct_invoices, if anything, is skipped after its failed test, on both engines.
    [(name, status, count)] = [f for f in failures["duckdb_close"] if f[1] != "skipped"]
    assert (name, status) == (CLOSE_TEST, "fail") and count > 0
    assert sorted(failures["spark_close"], key=repr) == sorted(failures["duckdb_close"], key=repr)


def test_the_unpriced_usage_test_fails_alike_on_both_engines(engines):
    *_, failures = engines
    [(status, count)] = failures["duckdb"]
    assert status == "fail" and count > 0  # November's unknown customer and model
    assert failures["spark"] == failures["duckdb"]


def test_the_unit_tests_pass_on_spark(engines):
    *_, failures = engines
    declared = []
    for folder in FOLDERS:
        for path in (DBT_PROJECT_DIR / "models" / folder).glob("_*__unit_tests.yml"):
            declared += [t["name"] for t in yaml.safe_load(path.read_text())["unit_tests"]]
    assert declared, "no unit test in the compared folders: the test would prove nothing"
    assert failures["unit"] == dict.fromkeys(declared, "pass")
