"""Kept for instances whose ``dagster.yaml`` still names ``TokenbillRunLauncher`` (a
``DAGSTER_HOME`` set up from an earlier ``orchestration/dagster.yaml``; ``make demo`` and
``make ui`` do not overwrite an existing one): it is Dagster's default run launcher, nothing
more, so those instances keep starting. Remove the ``run_launcher:`` section from such a
``dagster.yaml``. Dead run workers are failed by the ``run_worker_watchdog`` sensor
(``orchestration/defs/operations/watchdog.py``), which checks the workers of this launcher
like those of the default one.
"""

from __future__ import annotations

from dagster import DefaultRunLauncher


class TokenbillRunLauncher(DefaultRunLauncher):
    """Dagster's ``DefaultRunLauncher``, under the name earlier ``dagster.yaml`` files use."""
