"""dbt CLI arguments and environment for a partitioned run, built from the partition's window.

Dagster passes a run's window (and the invoicing settings) to dbt as environment variables of
the dbt process (set by ``tokenbill-dbt`` from its command line, ``child.py``), not
``--vars``: dbt re-parses the whole project whenever ``--vars`` change, seconds per run, while
the project reads these values only at execution (``macros/time_window.sql``), which leaves
the partial parse valid from one run to the next. ``--vars`` with the same names still work
and win, for a window run by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from dagster import TimeWindow

from orchestration.timeutil import as_utc

#: dbt parses vars with this format; it rejects an offset such as +00:00.
DBT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
#: dbt var -> the environment variable the project reads when the var is not given.
RUN_SETTING_ENV = {
    "window_start": "TOKENBILL_DBT_WINDOW_START",
    "window_end": "TOKENBILL_DBT_WINDOW_END",
    "as_of": "TOKENBILL_DBT_AS_OF",
    "invoice_grace_days": "TOKENBILL_INVOICE_GRACE_DAYS",
}
#: ``buildable`` indirect selection runs a test only when each of its parents is built in the
#: invocation or upstream of it: the daily reconciliation test (parents: hourly and daily)
#: runs with the daily grain, not with the hourly one, before daily exists. dbt unit tests
#: (``given``/``expect`` on fixed rows, ``dbt test --select test_type:unit``) test the SQL, not
#: the data: they run in the test suite (tests/test_dbt_unit.py), never in a run.
BUILD_ARGS = ("build", "--indirect-selection", "buildable", "--exclude-resource-type", "unit_test")


def window_vars(window: TimeWindow) -> dict[str, str]:
    """The ``window_start``/``window_end`` values (UTC, half-open) for a time window."""
    return {
        "window_start": as_utc(window.start).strftime(DBT_TIME_FORMAT),
        "window_end": as_utc(window.end).strftime(DBT_TIME_FORMAT),
    }


def dbt_build_args(
    window: TimeWindow | None, extra_vars: dict[str, str] | None = None
) -> list[str]:
    """``dbt build`` for exactly the window (all of history when there is none), as
    ``--vars``: the form to run by hand."""
    args = list(BUILD_ARGS)
    dbt_vars = {**(window_vars(window) if window is not None else {}), **(extra_vars or {})}
    if dbt_vars:
        args += ["--vars", json.dumps(dbt_vars, sort_keys=True)]
    return args


def dbt_build_env(window: TimeWindow | None, settings: Mapping[str, str]) -> dict[str, str | None]:
    """The environment of a ``dbt build`` (``BUILD_ARGS``) for exactly the window (all of
    history when there is none), with ``settings`` (``as_of``, ``invoice_grace_days``).

    Every variable is named: ``None`` means unset, so that dbt falls back to its default and
    no value leaks in from the environment of the process that starts dbt.
    """
    values = {**(window_vars(window) if window is not None else {}), **settings}
    unknown = set(values) - set(RUN_SETTING_ENV)
    if unknown:
        raise ValueError(f"not a dbt run setting: {sorted(unknown)}")
    return {env: values.get(name) for name, env in RUN_SETTING_ENV.items()}
