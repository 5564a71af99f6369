"""dbt CLI arguments and environment are built from the partition window alone (no dbt run)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from importlib.metadata import version as package_version
from pathlib import Path

import pytest
from dagster import TimeWindow

from orchestration.defs.dbt import assets as dbt_assets_module
from orchestration.defs.dbt.args import BUILD_ARGS, dbt_build_args, dbt_build_env, window_vars
from orchestration.defs.dbt.child import apply_environment_args, environment_args
from orchestration.defs.dbt.project import DBT_EXECUTABLE
from orchestration.settings import REPO_ROOT


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


def test_the_dbt_environment_leads_its_command_line_and_stays_in_its_process(monkeypatch):
    monkeypatch.setenv("TOKENBILL_DBT_AS_OF", "before")
    monkeypatch.delenv("TOKENBILL_DBT_WINDOW_START", raising=False)
    args = environment_args({"TOKENBILL_DBT_AS_OF": None, "TOKENBILL_DBT_WINDOW_START": "w x"})
    assert args == ["--unset=TOKENBILL_DBT_AS_OF", "TOKENBILL_DBT_WINDOW_START=w x"]
    # Building the arguments leaves this process's environment alone.
    assert os.environ["TOKENBILL_DBT_AS_OF"] == "before"
    assert "TOKENBILL_DBT_WINDOW_START" not in os.environ
    # tokenbill-dbt applies them in its own process, and hands dbt the rest of the line.
    try:
        rest = apply_environment_args([*args, "build", "--vars", "{a: B=1}"])
        assert rest == ["build", "--vars", "{a: B=1}"]
        assert "TOKENBILL_DBT_AS_OF" not in os.environ
        assert os.environ["TOKENBILL_DBT_WINDOW_START"] == "w x"
    finally:
        os.environ.pop("TOKENBILL_DBT_WINDOW_START", None)


def test_a_dbt_run_does_not_change_the_environment_of_its_process():
    """The asset passes the window on dbt's command line: nothing of it is left in (or ever
    set in) the run worker's environment, which other threads read."""
    source = Path(dbt_assets_module.__file__).read_text()
    assert "os.environ" not in source
    assert "environment_args(run_env)" in source


def test_tokenbill_dbt_answers_its_version_without_starting_dbt():
    """dagster-dbt asks ``<dbt_executable> --version`` once per dbt step; tokenbill-dbt answers
    from the installed dbt-core's metadata, without importing dbt (seconds per step)."""
    probe = (
        "import sys\n"
        "from orchestration.defs.dbt import child\n"
        "sys.argv = ['tokenbill-dbt', '--version']\n"
        "try:\n"
        "    child.main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print('dbt imported' if 'dbt.cli' in sys.modules else 'dbt not imported')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert result.stdout == (
        f"Core:\n  - installed: {package_version('dbt-core')}\ndbt not imported\n"
    )
    # The real entry point answers the same, parsed as dagster-dbt parses dbt's own answer.
    answer = subprocess.run(
        [str(DBT_EXECUTABLE), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"(\d+\.\d+\.\d+)", answer).group(1) == package_version("dbt-core")


def test_a_missing_tokenbill_dbt_is_one_line_saying_to_reinstall(tmp_path, monkeypatch):
    from orchestration.defs.dbt import project
    from orchestration.errors import SetupError

    monkeypatch.setattr(project, "DBT_EXECUTABLE", tmp_path / "tokenbill-dbt")
    with pytest.raises(SetupError) as raised:
        project.dbt_executable()
    assert str(raised.value) == (
        f"{tmp_path / 'tokenbill-dbt'} does not exist: re-run make install (pip install -e .) "
        "in this environment, which installs the tokenbill-dbt entry point the dbt assets run"
    )
