"""The dbt CLI resource: dagster-dbt's, with the run settings dbt reads beside it."""

from __future__ import annotations

from dagster_dbt import DbtCliResource
from pydantic import Field

from orchestration.settings import SETTINGS


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
