"""The dbt models as Dagster assets: one ``@dbt_assets`` per partition grain.

Each grain is selected by its dbt tag and has a single-run backfill policy, so a backfill of
N partitions is one run and one ``dbt build`` over the whole range. Daily partitions depend
on their 24 hourly parents and monthly on their days (Dagster's time-window mapping).
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, BackfillPolicy, Failure, PartitionsDefinition
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)

from orchestration.defs.dbt.args import dbt_build_args
from orchestration.defs.dbt.project import tokenbill_dbt_project
from orchestration.defs.partitions import daily_partitions, hourly_partitions, monthly_partitions
from orchestration.defs.resources import WAREHOUSE_POOL, Warehouse


class TokenbillTranslator(DagsterDbtTranslator):
    """Groups dbt models by folder (staging, token_usage...) instead of one 'default' group."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        if dbt_resource_props.get("resource_type") == "model" and len(fqn) > 2:
            folder = fqn[1]
            return {"marts": "token_usage", "rating": "rating", "catalog": "catalog"}.get(
                folder, folder
            )
        return super().get_group_name(dbt_resource_props)


TRANSLATOR = TokenbillTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


def _grain_assets(tag: str, partitions_def: PartitionsDefinition | None):
    @dbt_assets(
        manifest=tokenbill_dbt_project().manifest_path,
        project=tokenbill_dbt_project(),
        select=f"tag:{tag}",
        name=f"dbt_{tag}",
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run() if partitions_def else None,
        dagster_dbt_translator=TRANSLATOR,
        pool=WAREHOUSE_POOL,
    )
    def _assets(context: AssetExecutionContext, dbt: DbtCliResource, warehouse: Warehouse):
        # The warehouse resource is the one source of the file's path; dbt's profile reads it
        # from the environment of the dbt process, which inherits ours.
        os.environ["TOKENBILL_WAREHOUSE_PATH"] = warehouse.path
        window = context.partition_time_window if partitions_def is not None else None
        invocation = dbt.cli(
            dbt_build_args(window),
            context=context,
            # One shared target dir keeps dbt's partial-parse cache between runs (runs in
            # the warehouse pool never overlap).
            target_path=Path("target") / "dagster",
            # A failing data test is a failed asset check, not a crashed run; a model that
            # fails to build is (see below).
            raise_on_error=False,
        )
        yield from invocation.stream()
        broken = build_errors(invocation.get_artifact("run_results.json"))
        if broken:
            raise Failure(
                description="dbt could not build: " + "; ".join(broken),
                metadata={"dbt_command": " ".join(invocation.process.args)},
            )

    return _assets


def build_errors(run_results: Mapping[str, Any]) -> list[str]:
    """Nodes that errored (a model that did not build, a test whose SQL crashed).

    Test *failures* (status ``fail``) are not errors: they are reported as failed checks."""
    return [
        f"{r['unique_id']}: {(r.get('message') or '').strip()[:300]}"
        for r in run_results.get("results", [])
        if r.get("status") == "error"
    ]


dbt_catalog = _grain_assets("catalog", None)
dbt_hourly = _grain_assets("hourly", hourly_partitions)
dbt_daily = _grain_assets("daily", daily_partitions)
dbt_monthly = _grain_assets("monthly", monthly_partitions)
