"""The dbt CLI resource: dagster-dbt's, with the run settings dbt reads beside it."""

from __future__ import annotations

from dagster_dbt import DbtCliResource
from pydantic import Field

from orchestration.settings import ENGINES, SETTINGS, engine_setting


class TokenbillDbtCliResource(DbtCliResource):
    """``DbtCliResource`` plus the settings the dbt models read at run time.

    Its executable is ``tokenbill-dbt`` (``child.py``): dbt's CLI in a process that dies with
    the run worker, which takes each invocation's environment (the run's window) as leading
    ``NAME=VALUE`` arguments and answers dagster-dbt's ``--version`` probe without starting
    dbt (see ``child.py``).
    """

    invoice_grace_days: str = Field(
        default=SETTINGS["TOKENBILL_INVOICE_GRACE_DAYS"][0],
        description="Days after a billing period during which its invoices stay drafts "
        "(TOKENBILL_INVOICE_GRACE_DAYS), passed to the invoicing models.",
    )
    engine: str = Field(
        default=SETTINGS["TOKENBILL_ENGINE"][0],
        description="The engine dbt builds on (TOKENBILL_ENGINE): duckdb runs the profile's "
        "local target, spark its spark target.",
    )

    def dbt_target(self) -> str:
        """The profile target of the engine (``TOKENBILL_DBT_TARGET`` of the dbt process); a
        wrong engine fails the step with one line naming the setting."""
        return ENGINES[engine_setting(self.engine)]
