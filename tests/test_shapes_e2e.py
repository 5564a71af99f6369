"""End to end for producer shapes (issue 14): one hour mixing every shape, through a real S3
server, real Dagster runs and a real dbt build, lands and reconciles exactly; a rerun gives
identical tables.

The hour is one of the demo generator's (a mixed month), uploaded alone; the generator's
manifest restricted to that hour (``generation_manifest(..., hours=[h])``) is computed from the
simulated attempts before they were re-shaped, so every expected number below comes from
there, not from the pipeline.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3
import duckdb
import pytest
from dagster import DagsterInstance

from orchestration.definitions import build_defs
from orchestration.runner import run_period
from tools.generator import generate_month, generation_manifest, upload
from tools.generator.shapes import REPORTED

pytestmark = pytest.mark.slow

MONTH, EVENTS, SEED = "2026-10", 150_000, 7
#: 2026-10-02 15:00 UTC (index from the month's first hour): every valid shape, and malformed
#: lines among them (an ambiguous one, a truncated one, one outside its hour).
HOUR = 1 * 24 + 15
START = datetime(2026, 10, 1, tzinfo=UTC) + timedelta(hours=HOUR)
PREFIX = "usage"
SUBSETS = ("cache_write_5m_tokens", "cache_write_1h_tokens", "audio_input_tokens",
           "audio_output_tokens")  # fmt: skip
TABLES = (
    "raw.usage_events",
    "raw.usage_event_duplicates",
    "raw.usage_event_quarantine",
    "raw.ingestion_audit",
    "raw.ingestion_format_audit",
    "marts.fct_token_usage_hourly",
    "marts.fct_rated_charges_hourly",
)


@pytest.fixture(scope="module")
def landed(tmp_path_factory, s3_endpoint):
    root = tmp_path_factory.mktemp("shapes")
    bucket = f"tb-{root.name.replace('_', '-').lower()}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    prefix = START.strftime("dt=%Y-%m-%d/hour=%H/")
    objects = [o for o in generate_month(MONTH, EVENTS, SEED) if o.key.startswith(prefix)]
    upload(client, bucket, PREFIX, objects)
    manifest = generation_manifest(MONTH, EVENTS, SEED, hours=[HOUR])
    warehouse = str(root / "warehouse.duckdb")
    defs = build_defs(bucket=bucket, prefix=PREFIX, warehouse_path=warehouse)
    (root / "home").mkdir()
    instance = DagsterInstance.local_temp(str(root / "home"))

    def run() -> dict[str, list[tuple]]:
        runs = run_period(defs, START, START + timedelta(hours=1), instance)
        assert all(r.result.success for r in runs)
        with duckdb.connect(warehouse, read_only=True) as con:
            return {t: con.sql(f"select * from {t} order by all").fetchall() for t in TABLES}

    first = run()
    return manifest, warehouse, first, run


def _query(warehouse: str, sql: str) -> list[tuple]:
    with duckdb.connect(warehouse, read_only=True) as con:
        return con.sql(sql).fetchall()


def test_the_hour_mixes_every_shape(landed):
    manifest, *_ = landed
    valid_shapes = {n for n, c in manifest["shapes"].items() if c["valid"]}
    unshaped = ("unparsed", "ambiguous", "unrecognized", "unreported")
    assert valid_shapes == {n for n in REPORTED if n not in unshaped}
    assert manifest["lines"]["malformed"] >= 1
    assert manifest["otlp_spans_skipped"] >= 1


def test_every_record_of_the_hour_lands_once_and_reconciles(landed):
    manifest, warehouse, *_ = landed
    lines = manifest["lines"]
    assert _query(
        warehouse,
        "select lines_read, valid_count, duplicate_count, quarantined_count, "
        "otlp_spans_skipped, unreported_usage_count from raw.ingestion_audit "
        "where object_count > 0",
    ) == [
        (
            lines["total"],
            lines["valid_unique"],
            lines["duplicate"],
            lines["malformed"],
            manifest["otlp_spans_skipped"],
            manifest["malformed_by_reason"]["usage_not_reported"],
        )
    ]
    formats = _query(
        warehouse,
        "select source_format, records_read, valid_count, duplicate_count, quarantined_count "
        "from raw.ingestion_format_audit",
    )
    assert {f: (r, v, d, q) for f, r, v, d, q in formats} == {
        name: (c["valid"] + c["duplicate"] + c["quarantined"], c["valid"], c["duplicate"],
               c["quarantined"])
        for name, c in manifest["shapes"].items()
    }  # fmt: skip
    reasons = _query(
        warehouse,
        "select r, count(*) from raw.usage_event_quarantine, unnest(reason_codes) as t(r) "
        "where line_number is not null group by 1",
    )
    assert dict(reasons) == {k: v for k, v in manifest["malformed_by_reason"].items() if v}


def test_the_canonical_totals_are_exact_in_raw_and_in_the_marts(landed):
    manifest, warehouse, *_ = landed
    fields = (*manifest["tokens"], *SUBSETS)
    sums = ", ".join(f"sum({f})::bigint" for f in fields)
    expected = (*manifest["tokens"].values(), *(manifest["subset_tokens"][f] for f in SUBSETS))
    (raw,) = _query(warehouse, f"select count(*), {sums} from raw.usage_events")
    assert raw == (manifest["lines"]["valid_unique"], *expected)
    (mart,) = _query(warehouse, f"select sum(event_count)::bigint, {sums} "
                                "from marts.fct_token_usage_hourly")  # fmt: skip
    assert mart == (manifest["lines"]["valid_unique"], *expected)
    by_customer = _query(
        warehouse,
        "select customer_id, sum(event_count)::bigint, sum(input_tokens)::bigint, "
        "sum(output_tokens)::bigint from marts.fct_token_usage_hourly group by 1",
    )
    assert {c: (n, i, o) for c, n, i, o in by_customer} == {
        c: (v["events"], v["input_tokens"], v["output_tokens"])
        for c, v in manifest["by_customer"].items()
    }
    statuses = Counter(dict(_query(warehouse, "select status, count(*) from raw.usage_events "
                                              "group by 1")))  # fmt: skip
    assert statuses == Counter({s: n for s, n in manifest["valid_by_status"].items() if n})


def test_every_landed_event_of_the_hour_is_rated(landed):
    _, warehouse, *_ = landed
    assert _query(warehouse, "select count(*) from marts.fct_unpriced_usage") == [(0,)]
    (charged,) = _query(
        warehouse,
        "select count(*), count(*) filter (where amount is null) "
        "from marts.fct_rated_charges_hourly",
    )
    assert charged[0] > 0 and charged[1] == 0


def test_a_rerun_of_the_hour_gives_identical_tables(landed):
    _, _, first, run = landed
    assert run() == first
