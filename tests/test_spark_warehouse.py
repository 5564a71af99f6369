"""The Python assets' warehouse operations on Spark give what they give on DuckDB: the same
alerts feed object, byte for byte, the same enforcement file, and tokenbill's own tables
written to the lake where dbt's Spark sources read them. One Spark session for the module
(``spark_session``, the one the assets open), on a warehouse directory and metastore of its own.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

from orchestration.defs.alerts.feed import export_new_alerts
from orchestration.defs.enforcement.state import enforcement_document
from orchestration.defs.ingestion.lake import lake_files, read_lake_table
from orchestration.warehouse import DuckDBWarehouse, SparkWarehouse, spark_session

pytestmark = pytest.mark.slow
pytest.importorskip("pyspark", reason="the Spark extra: pip install -e '.[spark]'")

NOW = datetime(2026, 10, 6, 1)
MONEY = pa.decimal128(38, 18)
ALERTS = pa.table(
    {
        "alert_id": pa.array(["al-2", "al-1"], pa.string()),
        "alert_type": pa.array(["spend_threshold", "runway"], pa.string()),
        "customer_id": pa.array(["acme", "globex"], pa.string()),
        "alerted_at": pa.array(
            [datetime(2026, 10, 5, 9), datetime(2026, 10, 5, 8)], pa.timestamp("us")
        ),
        "amount": pa.array([Decimal("12.345"), Decimal("0.000000000000000001")], MONEY),
        "threshold": pa.array([Decimal("10"), None], MONEY),
    }
)
QUOTAS = pa.table(
    {
        "customer_id": ["acme", "acme", "globex"],
        "subscription_id": ["s1", "s1", "s2"],
        "limit_id": ["tokens", "requests", "tokens"],
        "metric": ["total_tokens", "requests", "total_tokens"],
        "model": [None, "gpt-4o", None],
        "feature": [None, None, "chat"],
        "max_value": pa.array([Decimal("1000"), Decimal("5"), Decimal("9")], MONEY),
        "used": pa.array([Decimal("1200.5"), Decimal("5"), Decimal("3")], MONEY),
        "billing_period_start": pa.array([datetime(2026, 10, 1)] * 3, pa.timestamp("us")),
        "billing_period_end": pa.array([datetime(2026, 11, 1)] * 3, pa.timestamp("us")),
        "reached_hour": pa.array(
            [datetime(2026, 10, 5, 7), datetime(2026, 10, 5, 8), None], pa.timestamp("us")
        ),
        "enforcement": ["hard", "hard", "hard"],
        "is_reached": [True, True, False],
    }
)
HOURLY = pa.table({"usage_hour": pa.array([datetime(2026, 10, 5, 9)], pa.timestamp("us"))})


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark_warehouse")
    duck = DuckDBWarehouse(duckdb.connect(str(root / "w.duckdb")))
    with spark_session("local[1]", str(root / "spark")) as session:
        spark = SparkWarehouse(session, str(root / "lake"))
        for tables in (duck, spark):
            tables.replace_tables("marts", {"fct_billing_alerts": ALERTS})
            tables.replace_tables(
                "marts", {"fct_quota_usage": QUOTAS, "fct_token_usage_hourly": HOURLY}
            )
        yield duck, spark, root / "lake"


def export(tables) -> dict[str, bytes]:
    objects: dict[str, bytes] = {}
    written = export_new_alerts(tables, objects.__setitem__, "exports/alerts", NOW)
    assert written is not None
    assert export_new_alerts(tables, objects.__setitem__, "exports/alerts", NOW) is None
    return objects


def test_the_alerts_feed_exports_the_same_object_once_on_both_engines(engines):
    duck, spark, lake = engines
    on_duckdb, on_spark = export(duck), export(spark)
    assert on_spark == on_duckdb
    ((key, body),) = on_duckdb.items()
    assert key.startswith("exports/alerts/alerted_from=2026-10-05/")
    assert body.decode().splitlines()[0] == (
        '{"alert_id":"al-1","alert_type":"runway","alerted_at":"2026-10-05T08:00:00Z",'
        '"amount":"0.000000000000000001","customer_id":"globex","threshold":null}'
    )
    # On Spark the record of exported ids is a lake table, one file swapped in whole.
    exported = read_lake_table(lake, "billing.exported_alerts")
    assert sorted(exported.column("alert_id").to_pylist()) == ["al-1", "al-2"]
    assert exported.column("object_key").to_pylist() == [key, key]
    assert len(lake_files(lake, "billing.exported_alerts")) == 1
    assert spark.rows("select count(*) from billing.exported_alerts") == [(2,)]


def test_the_enforcement_file_is_the_same_on_both_engines(engines):
    duck, spark, _ = engines
    body = enforcement_document(duck, datetime(2026, 10, 5, 8))
    assert enforcement_document(spark, datetime(2026, 10, 5, 8)) == body
    assert b'"as_of": "2026-10-05T10:00:00Z"' in body
    assert b'"count": 2' in body and b'"used": "1200.5"' in body


def test_replacing_rows_keeps_the_others_and_types_on_both_engines(engines):
    duck, spark, lake = engines
    rows = {}
    for tables in (duck, spark):
        tables.replace_where(
            "marts.fct_billing_alerts",
            "alerted_at >= ?",
            [datetime(2026, 10, 5, 9)],
            ALERTS.slice(0, 1).set_column(4, "amount", pa.array([Decimal("1.5")], MONEY)),
        )
        rows[tables.engine] = tables.rows(
            "select alert_id, amount, threshold from marts.fct_billing_alerts order by alert_id"
        )
        assert tables.relation_exists("marts", "fct_billing_alerts")
        assert not tables.relation_exists("marts", "nothing_here")
        assert tables.base_table_columns("marts")["fct_quota_usage"] == QUOTAS.column_names
    assert (
        rows["spark"]
        == rows["duckdb"]
        == [
            ("al-1", Decimal("0.000000000000000001"), None),
            ("al-2", Decimal("1.500000000000000000"), Decimal("10.000000000000000000")),
        ]
    )
    assert len(lake_files(lake, "marts.fct_billing_alerts")) == 1
