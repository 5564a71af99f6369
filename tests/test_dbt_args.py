"""dbt CLI arguments and environment are built from the partition window alone (no dbt run)."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta, timezone
from importlib.metadata import version as package_version
from pathlib import Path

import dagster_dbt.core.resource
import pytest
from dagster import TimeWindow

from orchestration.defs.dbt.args import BUILD_ARGS, dbt_build_args, dbt_build_env, window_vars
from orchestration.defs.dbt.project import DBT_PROJECT_DIR
from orchestration.defs.dbt.resource import TokenbillDbtCliResource, environment


def test_hour_window_becomes_half_open_utc_vars_without_offset():
    window = TimeWindow(datetime(2026, 10, 5, 7, tzinfo=UTC), datetime(2026, 10, 5, 8, tzinfo=UTC))
    assert window_vars(window) == {
        "window_start": "2026-10-05T07:00:00",
        "window_end": "2026-10-05T08:00:00",
    }


def test_non_utc_window_is_converted_to_utc():
    cet = timezone(timedelta(hours=2))
    window = TimeWindow(datetime(2026, 10, 5, 2, tzinfo=cet), datetime(2026, 10, 6, 2, tzinfo=cet))
    assert window_vars(window)["window_start"] == "2026-10-05T00:00:00"


def test_build_args_for_a_month_backfill():
    window = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    args = dbt_build_args(window)
    assert args[:5] == [*BUILD_ARGS]
    assert args[5] == "--vars"
    assert json.loads(args[6]) == {
        "window_start": "2026-10-01T00:00:00",
        "window_end": "2026-11-01T00:00:00",
    }


def test_build_args_without_a_window_rebuild_everything():
    assert dbt_build_args(None) == [*BUILD_ARGS]
    assert BUILD_ARGS == (
        "build", "--indirect-selection", "buildable", "--exclude-resource-type", "unit_test"
    )  # fmt: skip


def test_dagster_passes_the_window_and_settings_as_environment_not_vars():
    window = TimeWindow(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    assert dbt_build_env(window, {"invoice_grace_days": "3"}) == {
        "TOKENBILL_DBT_WINDOW_START": "2026-10-01T00:00:00",
        "TOKENBILL_DBT_WINDOW_END": "2026-11-01T00:00:00",
        "TOKENBILL_DBT_AS_OF": None,  # unset: dbt judges invoices at its own start
        "TOKENBILL_INVOICE_GRACE_DAYS": "3",
    }
    # No window: every window variable is unset, so dbt rebuilds all of history.
    assert dbt_build_env(None, {"as_of": "2026-11-05T00:00:00"}) == {
        "TOKENBILL_DBT_WINDOW_START": None,
        "TOKENBILL_DBT_WINDOW_END": None,
        "TOKENBILL_DBT_AS_OF": "2026-11-05T00:00:00",
        "TOKENBILL_INVOICE_GRACE_DAYS": None,
    }
    with pytest.raises(ValueError, match="as_off"):
        dbt_build_env(None, {"as_off": "typo"})


def test_the_environment_is_set_for_the_block_and_restored(monkeypatch):
    monkeypatch.setenv("TOKENBILL_DBT_AS_OF", "before")
    monkeypatch.delenv("TOKENBILL_DBT_WINDOW_START", raising=False)
    with environment({"TOKENBILL_DBT_AS_OF": None, "TOKENBILL_DBT_WINDOW_START": "w"}):
        assert "TOKENBILL_DBT_AS_OF" not in os.environ
        assert os.environ["TOKENBILL_DBT_WINDOW_START"] == "w"
    assert os.environ["TOKENBILL_DBT_AS_OF"] == "before"
    assert "TOKENBILL_DBT_WINDOW_START" not in os.environ


def test_the_dbt_version_is_known_without_running_dbt(monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"dbt was run: {args}")

    # dagster-dbt asks ``dbt --version`` through this name.
    monkeypatch.setattr(dagster_dbt.core.resource, "check_output", no_subprocess)
    resource = TokenbillDbtCliResource(
        project_dir=str(DBT_PROJECT_DIR), dbt_executable=str(Path(sys.executable).parent / "dbt")
    )
    assert str(resource._cli_version) == package_version("dbt-core")
