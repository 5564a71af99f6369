"""The code location: every domain's definitions, merged. No logic here.

Each ``orchestration/defs/<domain>/definitions.py`` builds the ``Definitions`` its domain owns
(assets with their checks, resources, and for operations the jobs, schedules and sensors);
this module adds the resources every domain shares and the executor, and merges them.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from orchestration.defs.alerts import definitions as alerts
from orchestration.defs.dbt import definitions as dbt
from orchestration.defs.enforcement import definitions as enforcement
from orchestration.defs.ingestion import definitions as ingestion
from orchestration.defs.invoicing import definitions as invoicing
from orchestration.defs.operations import definitions as operations
from orchestration.defs.publishing import definitions as publishing
from orchestration.defs.rating import definitions as rating
from orchestration.defs.resources import shared_resources
from orchestration.defs.wallets import definitions as wallets


def build_defs(
    bucket: str | None = None,
    prefix: str | None = None,
    warehouse_path: str | None = None,
    catalog_dir: str | None = None,
    analyst_dir: str | None = None,
) -> Definitions:
    """The code location. Arguments override the environment (tests, the demo)."""
    return Definitions.merge(
        rating.build_defs(catalog_dir=catalog_dir),
        ingestion.build_defs(),
        dbt.build_defs(),
        enforcement.build_defs(),
        wallets.build_defs(),
        invoicing.build_defs(),
        alerts.build_defs(),
        publishing.build_defs(),
        operations.build_defs(),
        Definitions(
            resources=shared_resources(bucket, prefix, warehouse_path, analyst_dir),
            # One process per run: the run worker executes the steps itself, so a killed
            # worker leaves no step process behind (and no step pays a Python start). The
            # steps of a job run one after another anyway (the warehouse pool has one slot).
            executor=in_process_executor,
        ),
    )


defs = build_defs()
