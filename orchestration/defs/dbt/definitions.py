"""dbt's definitions: one ``@dbt_assets`` per grain (their tests are asset checks) and the dbt
CLI resource they run."""

from __future__ import annotations

from dagster import Definitions

from orchestration.defs.dbt.assets import dbt_catalog, dbt_daily, dbt_hourly, dbt_monthly
from orchestration.defs.dbt.project import dbt_executable, tokenbill_dbt_project
from orchestration.defs.dbt.resource import TokenbillDbtCliResource
from orchestration.settings import env_or_default


def build_defs() -> Definitions:
    project = tokenbill_dbt_project()
    return Definitions(
        assets=[dbt_catalog, dbt_hourly, dbt_daily, dbt_monthly],
        resources={
            "dbt": TokenbillDbtCliResource(
                project_dir=project,
                profiles_dir=str(project.profiles_dir),
                # dbt installed beside this interpreter (venv on PATH or not), in a process
                # that dies with the run worker (child.py).
                dbt_executable=dbt_executable(),
                invoice_grace_days=env_or_default("TOKENBILL_INVOICE_GRACE_DAYS"),
                engine=env_or_default("TOKENBILL_ENGINE"),
            )
        },
    )
