"""The same dbt project on Apache Spark (issue #16): one fixture builds the project on DuckDB,
copies every source table of that warehouse into a Parquet lake (the layout of SPARK.md), builds
the same models on a local Spark (dbt-spark, session mode, in this process: Spark starts once)
and each test compares one model's rows on both engines exactly (same rows, exact decimals).

The input is the repository's demo catalog (catalog/: plans with per-unit, graduated, volume,
package and cost-plus prices, a plan change, an override, a spend cap, quota limits, JPY,
wallets with grants and top-ups) and a few hundred hand-made events of its customers over a
month boundary, plus customers and models it does not know (unpriced usage). Both engines
build the whole project except models/agent_runs (task A rewrites it; SPARK.md lists what it
still needs), with every data test, over all of history and then incrementally for October
(each engine's window replacement), invoices judged at one fixed as_of. The wallet ledger is
Python's (the wallet_ledger asset): booked once on DuckDB between two builds, it is a source
of the Spark build like the raw events.
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

# The models built on both engines, per folder; each is compared whole. Every model outside
# models/agent_runs that is not ephemeral (test_every_model_is_compared).
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
FOLDERS = list(MODELS)
COMPARED = [m for folder in FOLDERS for m in MODELS[folder]]
SCHEMA = {"stg_tokenbill__usage_events": "staging"}
# What the Spark build selects: the compared folders (their tests come with them).
SELECT = [f"path:models/{folder}" for folder in FOLDERS]
# The data test that fails on unpriced usage (an ERROR check in Dagster), which this input has
# on purpose: left out of the builds and run alone (test_unpriced_usage_fails_alike).
UNPRICED_TEST = "all_usage_is_priced"
EXCLUDE = ["path:models/agent_runs", UNPRICED_TEST]

# The token-usage scenario crosses the November/December boundary: its customers and model are
# unknown to the catalog (unpriced usage), which holds the close of a period that is due, so it
# stays in periods still drafts at AS_OF.
T0 = datetime(2026, 11, 30, 22)
OCTOBER = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
# Invoices are judged at this moment on both engines: October is past its grace period
# (finalized), November is a draft.
AS_OF = "2026-11-05T00:00:00"

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


def _catalog_events():
    """A few hundred calls of the catalog's customers, Oct 12 to Nov 3 (seeded), and a big
    spender past its spend cap (cus_0040, max_spend 20 USD). The calls fall in two hours of a
    day: every hour is a partition of the hourly marts on Spark, and each read of a model lists
    its partitions (the test's time is spent there, not in the rows)."""
    rng = random.Random(16)
    events = []
    start = datetime(2026, 10, 12)
    for _ in range(360):
        customer, provider, models = rng.choice(CALLERS + UNPRICED_CALLERS)
        day = start + timedelta(days=rng.randrange(22), hours=rng.choice([9, 15]))
        ts = day + timedelta(minutes=rng.randrange(60), seconds=rng.randrange(60))
        if (customer, provider, models) in UNPRICED_CALLERS:
            ts = ts.replace(month=11, day=min(ts.day, 28))
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
    for day in range(14):
        ts = datetime(2026, 10, 14 + day, 9, 30)
        extra = {"provider": "anthropic", "model": "claude-sonnet-4-5", "input_tokens": 40_000}
        events.append(("cus_0040", ts, 150_000, extra))
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


def _build_duckdb(warehouse: str, target: Path, window: TimeWindow | None) -> None:
    env = dbt_build_env(window, {"as_of": AS_OF})
    result = dbt(target, *BUILD_ARGS, "--exclude", *EXCLUDE, warehouse=warehouse, env=env)
    assert result.returncode == 0, result.stdout[-4000:]


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


def _spark_build(runner, common: list[str], run_vars: dict[str, str]) -> list[str]:
    """The build's failures: each node that neither succeeded nor passed (a WARN test, such
    as margin_cost_is_known on the unknown model's usage, warns alike on DuckDB)."""
    args = [*BUILD_ARGS, *common, "--select", *SELECT, "--exclude", *EXCLUDE]
    built = runner.invoke([*args, "--vars", json.dumps(run_vars)])
    if built.result is None:
        return [repr(built.exception)]
    return [
        f"{r.node.name}: {r.status}: {r.message}"
        for r in built.result
        if str(r.status) not in ("success", "pass", "warn", "no-op")
    ]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """Both engines through the same story: the hourly models the ledger reads, the wallet
    ledger booked (Python, DuckDB), all of history built (October's invoices finalized at
    AS_OF), a late October event, then October rebuilt (its adjustment booked). Spark gets
    DuckDB's sources as a lake, the late event as a second file of raw.usage_events."""
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
    _build_duckdb(warehouse, target, None)
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
    _build_duckdb(warehouse, target, OCTOBER)
    dbt(
        target, "test", "--select", UNPRICED_TEST, warehouse=warehouse,
        env=dbt_build_env(None, {"as_of": AS_OF}),
    )  # fmt: skip
    results = json.loads((target / "run_results.json").read_text())["results"]
    failures = {"duckdb": [(r["status"], r["failures"]) for r in results]}

    spark_warehouse = root / "spark"
    saved = {k: os.environ.get(k) for k in ("TOKENBILL_SPARK_WAREHOUSE", "TZ", "DO_NOT_TRACK")}
    os.environ.update(TOKENBILL_SPARK_WAREHOUSE=str(spark_warehouse), TZ="UTC", DO_NOT_TRACK="1")
    common = ["--target", "spark", "--profiles-dir", str(DBT_PROJECT_DIR)]
    common += ["--project-dir", str(DBT_PROJECT_DIR), "--target-path", str(root / "target-spark")]
    sources = ["run-operation", "create_lake_sources", *common, "--vars", f"lake_root: '{lake}'"]
    try:
        runner = dbtRunner()
        created = runner.invoke(sources)
        assert created.success, created.exception
        failures["build"] = _spark_build(runner, common, {"as_of": AS_OF})
        # The late event lands in the lake (a new file, then the listing refreshed); October
        # again: its partitions are replaced (insert_overwrite), November's are left, as
        # DuckDB's delete+insert does.
        late_file.rename(lake / "raw" / "usage_events" / "part-late.parquet")
        refreshed = runner.invoke(sources)
        assert refreshed.success, refreshed.exception
        october = {
            "window_start": f"{OCTOBER.start:%Y-%m-%dT%H:%M:%S}",
            "window_end": f"{OCTOBER.end:%Y-%m-%dT%H:%M:%S}",
        }
        failures["build"] += _spark_build(runner, common, {"as_of": AS_OF, **october})
        tested = runner.invoke(["test", *common, "--select", UNPRICED_TEST])
        failures["spark"] = [(str(r.status), r.failures) for r in tested.result]
        # The unit tests (given/expect on fixed rows) of the compared folders, on Spark's
        # relations (dbt reads their column types).
        unit = runner.invoke(["test", *common, "--select", "test_type:unit", "--exclude", *EXCLUDE])
        failures["unit"] = {r.node.name: str(r.status) for r in unit.result}
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
        yield warehouse, spark, root, failures
    finally:
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
    # The same columns; Spark stores a partitioned table's partition column last.
    assert sorted(frame.columns) == sorted(duck_columns)
    columns = ", ".join(f'"{c}"' for c in duck_columns)
    duck = _rows(query(warehouse, f"select {columns} from {relation}"))
    on_spark = _rows(frame.select(*duck_columns).collect())
    assert duck, f"{model} is empty: the comparison would prove nothing"
    assert on_spark == duck


def test_every_model_outside_agent_runs_is_compared(engines):
    _, _, root, _ = engines
    manifest = json.loads((root / "target-spark" / "manifest.json").read_text())
    models = {
        node["name"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
        and node["config"]["materialized"] != "ephemeral"
        and not node["path"].startswith("agent_runs/")
        and node["path"].split("/")[0] in FOLDERS
    }
    assert models == set(COMPARED)


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
