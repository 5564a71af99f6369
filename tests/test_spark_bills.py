"""The same bills on both engines, end to end (issue #16): from the SAME S3 objects, the real
jobs (catalog, then hours, days and the month: ingestion, marts, rating, wallet ledger,
invoices, the payment-provider export, alerts) run once on DuckDB and once on Spark, and
every relation the runs build and every exported object must be identical.

Two periods, each on both engines: (a) one day (only that day's objects, under their own
prefix; the month's close then holds that day alone) and (b) the demo month at reduced size
(``tools.generator``: the first and last hour of every day of a 12,000-event month, ~1,000
events, every producer shape, duplicates and malformed lines, the repository's catalog). Each
engine has its own warehouse, Dagster instance and export prefixes in the one bucket; Spark
runs once per period, in a module fixture, and the tests compare what the fixture read back.

"Identical" is exact: the same columns, the same multiset of rows, decimals equal as values
(``Decimal`` compares exactly, ``1.50 == 1.5``), timestamps as naive UTC. Only what a run
stamps on its rows is left out (:data:`VOLATILE`): the moment of the run, not the bill.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import boto3
import duckdb
import pytest

from orchestration.defs.ingestion.lake import LAKE_TABLES
from tests.spark_support import EnginePipeline
from tools.generator import generate_month, upload

pytestmark = pytest.mark.slow
pytest.importorskip("pyspark", reason="the Spark extra: pip install -e '.[spark]'")

MONTH = "2026-10"
EVENTS = 12_000
SEED = 7
#: The month's hours kept (of every day): the first and the last, across every day and the
#: month's boundaries. Each hour with usage is a partition of every hourly table on Spark, and
#: replacing partitions costs Spark's metastore per partition (a whole month of hours is 744
#: of them: 10 min of the hourly run on this machine, 2026-12-03): 62 hours, ~1,000 events.
HOURS = ("00", "23")
DAY = datetime(2026, 10, 5, tzinfo=UTC)
PERIODS = {
    "day": (DAY, DAY.replace(day=6)),
    "month": (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)),
}
ENGINES = ("duckdb", "spark")
#: Columns a run stamps with its own moment (the run's as_of), not part of the bill.
VOLATILE = {"booked_at", "loaded_at", "ingested_at", "landed_at", "exported_at", "generated_at"}
#: Spark's own columns: the run marts' day partition (dbt_project/SPARK.md, "Agent runs").
SPARK_ONLY_COLUMNS = {"first_event_date"}
#: Schemas holding no bill: DuckDB's own.
NOT_COMPARED = {"main", "information_schema", "pg_catalog"}
#: The groups compared one test each: a dbt model by its folder (models/<folder>/), any other
#: relation by its schema (raw: ingestion's landing tables; audit: its audits; catalog: the
#: loaded catalog beside the dim_ views; billing: the wallet ledger the Python asset books).
GROUPS = [
    "raw",
    "audit",
    "billing",
    "staging",
    "marts",
    "catalog",
    "rating",
    "wallets",
    "invoicing",
    "agent_runs",
]


def _folders() -> dict[str, str]:
    """{model name: its folder under models/} from the dbt manifest."""
    from orchestration.defs.dbt.project import tokenbill_dbt_project

    manifest = json.loads(tokenbill_dbt_project().manifest_path.read_text())
    return {
        node["name"]: node["fqn"][1]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and len(node["fqn"]) > 2
    }


def group_of(relation: str, folders: dict[str, str]) -> str:
    schema, name = relation.split(".")
    return folders.get(name, schema)


def _key(row: tuple) -> str:
    return repr(row)


def _value(value):
    """A map as its sorted (key, value) pairs: DuckDB returns a dict, Spark's Arrow a list of
    pairs, either in any order."""
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return tuple(sorted(value))
    return value


def _snapshot(columns_of: dict[str, list[str]], rows_of: Callable[[str, list[str]], list]):
    """{relation: (columns compared, rows sorted)} for every relation in ``columns_of``."""
    out = {}
    for relation, columns in columns_of.items():
        kept = [c for c in columns if c not in VOLATILE]
        out[relation] = (
            sorted(kept),
            sorted((tuple(_value(v) for v in r) for r in rows_of(relation, kept)), key=_key),
        )
    return out


def _duckdb_relations(warehouse: str) -> dict[str, list[str]]:
    with duckdb.connect(warehouse, read_only=True) as con:
        rows = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "order by table_schema, table_name, ordinal_position"
        ).fetchall()
    out: dict[str, list[str]] = {}
    for schema, table, column in rows:
        if schema not in NOT_COMPARED:
            out.setdefault(f"{schema}.{table}", []).append(column)
    return out


def _duckdb_snapshot(warehouse: str) -> dict:
    relations = _duckdb_relations(warehouse)
    with duckdb.connect(warehouse, read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")

        def rows(relation: str, columns: list[str]) -> list:
            cols = ", ".join(f'"{c}"' for c in sorted(columns))
            return con.execute(f"select {cols} from {relation}").fetchall()

        return _snapshot(relations, rows)


def _spark_snapshot(pipeline: EnginePipeline) -> dict:
    with pipeline.spark() as spark:
        session = spark.spark
        relations: dict[str, list[str]] = {}
        for db in session.catalog.listDatabases():
            if db.name == "default":
                continue
            for table in session.catalog.listTables(db.name):
                if table.isTemporary:
                    continue
                relation = f"{db.name}.{table.name}"
                relations[relation] = [c.name for c in session.catalog.listColumns(relation)]

        # Ingestion's own tables (duplicates, quarantine, objects, audits) are dbt sources:
        # create_lake_sources made them tables of the metastore over the lake.
        assert set(LAKE_TABLES) <= set(relations), sorted(set(LAKE_TABLES) - set(relations))
        for relation, columns in relations.items():
            relations[relation] = [c for c in columns if c not in SPARK_ONLY_COLUMNS]

        def rows(relation: str, columns: list[str]) -> list:
            cols = ", ".join(f"`{c}`" for c in sorted(columns))
            return spark.rows(f"select {cols} from {relation}")

        return _snapshot(relations, rows)


def _exports(bucket: str, prefix: str) -> dict[str, object]:
    """Every object under ``prefix``: JSON lines parsed (volatile keys dropped), others as
    text; keyed by the key below the prefix."""
    client = boto3.client("s3")
    out: dict[str, object] = {}
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    for page in pages:
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
            name = obj["Key"][len(prefix) + 1 :]
            if name.endswith((".jsonl", ".json")):
                if name.endswith(".json"):
                    parsed = json.loads(body)
                    lines = parsed if isinstance(parsed, list) else [parsed]
                else:
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                out[name] = sorted(
                    (
                        {k: v for k, v in line.items() if k not in VOLATILE}
                        if isinstance(line, dict)
                        else line
                        for line in lines
                    ),
                    key=lambda x: json.dumps(x, sort_keys=True),
                )
            else:
                out[name] = body
    return out


def fingerprint(snapshot: dict) -> str:
    digest = hashlib.sha256()
    for relation in sorted(snapshot):
        columns, rows = snapshot[relation]
        digest.update(f"{relation}:{columns}:{len(rows)}:{rows!r};".encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def bills(tmp_path_factory, s3_endpoint):
    """{period: {engine: {"runs", "tables", "exports"}}}: each period run on each engine."""
    root = tmp_path_factory.mktemp("spark_bills")
    bucket = f"tb-{root.name.replace('_', '-').lower()}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    month = (o for o in generate_month(MONTH, EVENTS, SEED) if o.key.split("/")[1][5:] in HOURS)
    upload(client, bucket, "usage", month)
    day_keys = f"dt={DAY:%Y-%m-%d}/"
    day = (o for o in generate_month(MONTH, EVENTS, SEED) if o.key.startswith(day_keys))
    upload(client, bucket, "day", day)
    prefix = {"day": "day", "month": "usage"}
    out: dict = {}
    for period, (start, end) in PERIODS.items():
        for engine in ENGINES:
            where = root / f"{period}-{engine}"
            where.mkdir()
            outputs = f"out/{period}/{engine}"
            pipeline = EnginePipeline(
                where,
                bucket,
                engine,
                prefix=prefix[period],
                settings={
                    "TOKENBILL_EXPORT_PREFIX": f"{outputs}/exports",
                    "TOKENBILL_ALERTS_PREFIX": f"{outputs}/alerts",
                    "TOKENBILL_ENFORCEMENT_KEY": f"{outputs}/enforcement.json",
                },
            )
            runs = pipeline.period(start, end)
            tables = (
                _duckdb_snapshot(pipeline.warehouse)
                if engine == "duckdb"
                else _spark_snapshot(pipeline)
            )
            out.setdefault(period, {})[engine] = {
                "runs": {r.job_name: r.result.success for r in runs},
                "failed_steps": [
                    e.step_key
                    for r in runs
                    for e in r.result.all_events
                    if e.event_type_value == "STEP_FAILURE"
                ],
                "tables": tables,
                "exports": _exports(bucket, outputs),
            }
    return out


def _differences(duck: dict, spark: dict, group: str) -> dict[str, str]:
    """{relation: what differs} for the relations of ``group`` on either engine."""
    out = {}
    folders = _folders()
    names = sorted(r for r in {*duck, *spark} if group_of(r, folders) == group)
    for relation in names:
        if relation not in spark:
            out[relation] = "missing on Spark"
            continue
        if relation not in duck:
            out[relation] = "missing on DuckDB"
            continue
        (dcols, drows), (scols, srows) = duck[relation], spark[relation]
        if dcols != scols:
            out[relation] = f"columns differ: only DuckDB {sorted(set(dcols) - set(scols))}, "
            out[relation] += f"only Spark {sorted(set(scols) - set(dcols))}"
        elif drows != srows:
            only_d = [r for r in drows if r not in srows][:2]
            only_s = [r for r in srows if r not in drows][:2]
            out[relation] = (
                f"{len(drows)} vs {len(srows)} rows; columns {dcols}; only DuckDB {only_d}; "
                f"only Spark {only_s}"
            )
    return out


@pytest.mark.parametrize("period", PERIODS)
def test_every_run_succeeds_on_both_engines(bills, period):
    for engine in ENGINES:
        assert bills[period][engine]["failed_steps"] == [], engine
        assert bills[period][engine]["runs"] == {
            "catalog_job": True,
            "hourly_usage_job": True,
            "daily_usage_job": True,
            "monthly_usage_job": True,
        }, engine


@pytest.mark.parametrize("period", PERIODS)
def test_the_bills_are_not_empty(bills, period):
    """What the comparisons stand on: the DuckDB side has usage, rated charges, invoices
    with money and an export."""
    tables = bills[period]["duckdb"]["tables"]
    for relation in (
        "marts.fct_token_usage_daily",
        "marts.fct_rated_charges_monthly",
        "marts.fct_invoices",
        "marts.fct_invoice_line_items",
    ):
        assert tables[relation][1], f"{relation} is empty: the comparison would prove nothing"
    assert bills[period]["duckdb"]["exports"], "no invoice exported"


def test_every_relation_is_in_a_compared_group(bills):
    folders = _folders()
    for period in PERIODS:
        for engine in ENGINES:
            relations = bills[period][engine]["tables"]
            assert {group_of(r, folders) for r in relations} <= set(GROUPS), (period, engine)


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("period", PERIODS)
def test_the_group_is_identical_on_both_engines(bills, period, group):
    duck = bills[period]["duckdb"]["tables"]
    spark = bills[period]["spark"]["tables"]
    assert _differences(duck, spark, group) == {}


@pytest.mark.parametrize("period", PERIODS)
def test_the_payment_provider_export_is_identical(bills, period):
    duck = bills[period]["duckdb"]["exports"]
    spark = bills[period]["spark"]["exports"]
    assert sorted(spark) == sorted(duck)
    assert {k for k in duck if spark[k] != duck[k]} == set()


@pytest.mark.parametrize("period", PERIODS)
def test_the_fingerprints_match(bills, period):
    duck = bills[period]["duckdb"]["tables"]
    spark = bills[period]["spark"]["tables"]
    assert fingerprint(spark) == fingerprint(duck)
