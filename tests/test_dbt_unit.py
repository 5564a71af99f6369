"""The dbt project's unit tests, and its raw sources against the tables Python creates.

The pricing and rounding rules are pure SQL: dbt unit tests (``unit_tests:`` with
``given``/``expect`` in ``models/<folder>/_<folder>__unit_tests.yml``) run each model's SQL on a
few fixed rows. They need the models' input relations to exist (dbt reads their column types),
so the module builds a warehouse with no data: the landing tables from the Python DDL, then
``dbt run --empty``. Each unit test is one pytest test here; the Dagster runs never run them
(``BUILD_ARGS`` excludes the unit_test resource type).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import yaml

from orchestration.defs.dbt.args import BUILD_ARGS
from orchestration.defs.dbt.project import DBT_PROJECT_DIR
from tests.dbt_support import dbt, landing_tables


def _declared_unit_tests() -> list[str]:
    names = []
    for path in sorted((DBT_PROJECT_DIR / "models").rglob("*.yml")):
        names += [t["name"] for t in (yaml.safe_load(path.read_text()) or {}).get("unit_tests", [])]
    return names


UNIT_TESTS = _declared_unit_tests()


@pytest.fixture(scope="module")
def empty_warehouse(tmp_path_factory) -> tuple[str, Path]:
    """(warehouse, dbt target dir): every source table and every model, with no rows."""
    root = tmp_path_factory.mktemp("dbt_unit")
    warehouse = str(root / "warehouse.duckdb")
    landing_tables(warehouse)
    result = dbt(root / "target", "run", "--empty", warehouse=warehouse)
    assert result.returncode == 0, result.stdout[-3000:]
    return warehouse, root / "target"


@pytest.fixture(scope="module")
def unit_results(empty_warehouse) -> tuple[dict[str, str], str]:
    """(unit test name -> its status in dbt's run_results.json, dbt's output), from one
    ``dbt test`` of them all."""
    warehouse, target = empty_warehouse
    result = dbt(target, "test", "--select", "test_type:unit", warehouse=warehouse)
    run_results = json.loads((target / "run_results.json").read_text())["results"]
    statuses = {r["unique_id"].rsplit(".", 1)[-1]: r["status"] for r in run_results}
    assert set(statuses) == set(UNIT_TESTS), result.stdout[-3000:]
    return statuses, result.stdout


def _failure(output: str, name: str) -> str:
    """dbt's report of a failed unit test: its expected and actual rows, as a diff table."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if f"unit_test {name} " in line
                  and "Failure in" in line), None)  # fmt: skip
    if start is None:
        return output[-3000:]
    end = next((i for i in range(start + 2, len(lines)) if not lines[i].strip()), len(lines))
    return "\n".join(lines[start : end + 8])


def test_unit_tests_are_declared():
    # The rules each unit test file covers; a rename or a lost file fails here.
    assert len(UNIT_TESTS) == len(set(UNIT_TESTS)) >= 20
    assert {"graduated_tiers_known_answers", "customer_override_beats_any_plan_price",
            "usd_minimum_invoices_exactly_fee_plus_minimum"} <= set(UNIT_TESTS)  # fmt: skip


@pytest.mark.parametrize("name", UNIT_TESTS)
def test_dbt_unit_test(unit_results, name):
    statuses, output = unit_results
    assert statuses[name] == "pass", f"dbt unit test {name} failed:\n{_failure(output, name)}"


def test_the_dagster_runs_never_run_unit_tests():
    assert BUILD_ARGS[-2:] == ("--exclude-resource-type", "unit_test")


# The Python DDL's types as information_schema spells them -> the spelling of the sources'
# data_type (the dbt-duckdb column types).
_TYPE_SPELLING = {"DECIMAL(38,18)": "decimal(38, 18)"}


def _spelled(data_type: str) -> str:
    return _TYPE_SPELLING.get(data_type, data_type.lower())


def test_sources_declare_exactly_the_columns_of_the_tables_python_creates(empty_warehouse):
    warehouse, target = empty_warehouse
    manifest = json.loads((target / "manifest.json").read_text())
    declared = {
        f"{s['schema']}.{s['name']}": [(c["name"], c["data_type"]) for c in s["columns"].values()]
        for s in manifest["sources"].values()
    }
    with duckdb.connect(warehouse, read_only=True) as con:
        rows = con.execute(
            "select table_schema || '.' || table_name, column_name, data_type "
            "from information_schema.columns order by table_schema, table_name, ordinal_position"
        ).fetchall()
    actual: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in rows:
        if table in declared:
            actual.setdefault(table, []).append((column, _spelled(data_type)))
    assert set(actual) == set(declared), "a source has no table in the warehouse"
    assert declared == actual
