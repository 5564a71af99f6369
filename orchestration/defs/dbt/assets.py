"""The dbt models as Dagster assets: one ``@dbt_assets`` per partition grain.

Each grain is selected by its dbt tag and has a single-run backfill policy, so a backfill of
N partitions is one run and one ``dbt build`` over the whole range. Daily partitions depend
on their 24 hourly parents and monthly on their days (Dagster's time-window mapping).
"""

import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetObservation,
    BackfillPolicy,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    PartitionsDefinition,
)
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets

from orchestration.defs.dbt.args import BUILD_ARGS, dbt_build_env
from orchestration.defs.dbt.child import PARENT_PID_ENV, RUN_FIRST_ENV, environment_args
from orchestration.defs.dbt.project import tokenbill_dbt_project
from orchestration.defs.dbt.resource import TokenbillDbtCliResource
from orchestration.defs.ingestion.lake import spark_path
from orchestration.defs.partitions import daily_partitions, hourly_partitions, monthly_partitions
from orchestration.defs.progress import Progress
from orchestration.defs.resources import WAREHOUSE_POOL, Warehouse
from orchestration.timeutil import naive_utc

#: Marts analysts rely on, by grain: how stale they may get before the freshness check warns
#: and fails. Hourly marts follow the hourly schedule (plus its lag); daily ones the daily
#: rollup; monthly ones are closed once a month after the invoice grace period.
FRESHNESS = {
    "hourly": FreshnessPolicy.time_window(
        warn_window=timedelta(hours=2), fail_window=timedelta(hours=6)
    ),
    "daily": FreshnessPolicy.time_window(
        warn_window=timedelta(hours=26), fail_window=timedelta(hours=48)
    ),
    "monthly": FreshnessPolicy.time_window(
        warn_window=timedelta(days=35), fail_window=timedelta(days=40)
    ),
}
OWNERS = ["team:billing"]


class TokenbillTranslator(DagsterDbtTranslator):
    """Groups dbt models by folder (staging, token_usage...) instead of one 'default' group,
    names the billing team as owner and sets freshness expectations on the fct_ marts."""

    def get_asset_spec(self, manifest, unique_id, project):
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props.get("resource_type") != "model":
            return spec
        tags = props.get("tags") or []
        grain = next((t for t in ("hourly", "daily", "monthly") if t in tags), None)
        freshness = FRESHNESS[grain] if grain and props["name"].startswith("fct_") else None
        return spec.replace_attributes(owners=OWNERS, freshness_policy=freshness)

    def get_asset_check_spec(self, asset_spec, manifest, unique_id, project):
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None:
            return None
        return spec._replace(blocking=dbt_test_blocks(manifest["nodes"][unique_id]))

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        if dbt_resource_props.get("resource_type") == "model" and len(fqn) > 2:
            folder = fqn[1]
            return {"marts": "token_usage"}.get(folder, folder)
        return super().get_group_name(dbt_resource_props)


def dbt_test_blocks(test_props: Mapping[str, Any]) -> bool:
    """Whether a dbt test blocks: its failure fails the run and stops what is downstream of
    it (the export of invoices, the next grain's run). The one rule: a test with ``error``
    severity blocks (it guards an invariant money depends on: reconciliations, grains, the
    close), unless its dbt config says ``meta: {dagster: {blocking: false}}`` (a data-quality
    signal that is handled later: unpriced usage, which holds the monthly close instead).
    ``warn`` tests never block. See README, "Reading the checks"."""
    config = test_props.get("config") or {}
    explicit = ((config.get("meta") or test_props.get("meta") or {}).get("dagster") or {}).get(
        "blocking"
    )
    if explicit is not None:
        return bool(explicit)
    return (config.get("severity") or "error").lower() == "error"


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
    def _assets(context: AssetExecutionContext, dbt: TokenbillDbtCliResource, warehouse: Warehouse):
        window = context.partition_time_window if partitions_def is not None else None
        run_env = {
            # The warehouse resource is the one source of the file's path and memory limit;
            # dbt's profile reads them from the environment of the dbt process.
            "TOKENBILL_WAREHOUSE_PATH": warehouse.path,
            "TOKENBILL_DUCKDB_MEMORY_LIMIT": warehouse.memory_limit,
            "TOKENBILL_DBT_TARGET": dbt.dbt_target(),  # the engine's (TOKENBILL_ENGINE)
            **engine_env(warehouse),
            **dbt_build_env(window, invoice_vars(context.run.tags, dbt.invoice_grace_days)),
            PARENT_PID_ENV: str(os.getpid()),  # dbt dies with this process (child.py)
        }
        invocation = dbt.cli(
            # The dbt process's own environment leads its command line (child.py): this
            # process's environment is left as it is.
            [*environment_args(run_env), *BUILD_ARGS],
            context=context,
            # One shared target dir keeps dbt's partial-parse cache between runs (runs in
            # the warehouse pool never overlap).
            target_path=Path("target") / "dagster",
            # A failing data test is a failed asset check, not a crashed run; a model that
            # fails to build is (see below).
            raise_on_error=False,
        )
        held = []
        for event in stream_with_progress(invocation, context):
            if stored_failures(event, invocation.manifest):
                held.append(event)  # its failing rows are read once dbt has let go
            else:
                yield event
        yield from with_failing_rows(held, invocation.manifest, warehouse)
        run_results = invocation.get_artifact("run_results.json")
        yield from table_observations(run_results, warehouse, window)
        broken = build_errors(run_results)
        blocked = blocking_test_failures(run_results, invocation.manifest, warehouse)
        if broken or blocked:
            # One line first, before Dagster's generic "blocking asset check failed".
            reasons = (["dbt could not build: " + "; ".join(broken)] if broken else []) + blocked
            raise Failure(
                description=" | ".join(reasons),
                metadata={"dbt_command": " ".join(invocation.process.args)},
            )

    return _assets


def engine_env(warehouse: Warehouse) -> dict[str, str | None]:
    """What the dbt process needs besides the DuckDB file: with the spark engine, the spark
    target's warehouse directory, the lake root (``s3://`` as ``s3a://``) and the lake's
    source tables registered before the build (``create_lake_sources``, in the same dbt
    process: child.py); nothing (unset) with duckdb."""
    if not warehouse.is_spark:
        return dict.fromkeys(("TOKENBILL_SPARK_WAREHOUSE", "TOKENBILL_LAKE_ROOT", RUN_FIRST_ENV))
    return {
        "TOKENBILL_SPARK_WAREHOUSE": warehouse.spark_warehouse,
        "TOKENBILL_LAKE_ROOT": spark_path(warehouse.lake_root),
        RUN_FIRST_ENV: "run-operation create_lake_sources",
    }


def stream_with_progress(invocation, context: AssetExecutionContext) -> Iterator[Any]:
    """``invocation.stream()``'s Dagster events, logging "dbt: N of M nodes done" as dbt
    finishes its nodes (models, tests; at most every 5 s, and the last)."""
    progress = Progress(context.log.info, "dbt", "nodes")
    for event in invocation.stream_raw_events():
        count_node(progress, event.raw_event)
        yield from event.to_default_asset_events(
            manifest=invocation.manifest,
            dagster_dbt_translator=invocation.dagster_dbt_translator,
            context=context,
            target_path=invocation.target_path,
            project=invocation.project,
        )
    progress.finish()


def count_node(progress: Progress, raw_event: Mapping[str, Any]) -> None:
    """Advance ``progress`` on dbt's structured log. dbt numbers the nodes it runs ("3 of 12
    START ...", "3 of 12 OK created ..."): each node ends with one event carrying its ``index``
    and the ``total`` (``num_models`` on a test's result; a model's, test's or seed's result, or
    a skip), hooks aside."""
    name = raw_event.get("info", {}).get("name", "")
    data = raw_event.get("data", {})
    total = data.get("total") or data.get("num_models")
    if "index" not in data or not total or name.startswith("LogHook"):
        return
    if progress.total is None:
        progress.set_total(int(total))
    if name != "LogStartLine":
        progress.advance()


#: Period columns of the marts, in the order they are looked for.
PERIOD_COLUMNS = ("usage_hour", "usage_date", "usage_month", "billing_period_start")
#: Models whose rows in the window are worth a look in the UI.
SAMPLED = {
    "fct_unpriced_usage": "usage_hour, customer_id, model, meter, quantity, unpriced_reason",
    "fct_margin_monthly": "customer_id, model, feature, currency, revenue, provider_cost, "
    "gross_margin",
}


def table_observations(run_results: Mapping[str, Any], warehouse: Warehouse, window):
    """Row counts (whole table and the run's window) and small samples of the tables dbt
    built, read after dbt has released the warehouse (DuckDB has one writer per file)."""
    built = [
        r["unique_id"].split(".")[-1]
        for r in run_results.get("results", [])
        if r["unique_id"].startswith("model.") and r.get("status") == "success"
    ]
    if not built:
        return
    with warehouse.tables(read_only=True) as con:
        tables = {
            name: [c for c in PERIOD_COLUMNS if c in columns]
            for name, columns in con.base_table_columns("marts").items()
        }
        for name in built:
            if name not in tables:
                continue  # views and ephemeral models
            metadata: dict[str, Any] = {
                "dagster/row_count": con.rows(f"select count(*) from marts.{name}")[0][0]
            }
            where = "true"
            if window is not None and tables[name]:
                where = f"{tables[name][0]} >= ? and {tables[name][0]} < ?"
                params = [naive_utc(window.start), naive_utc(window.end)]
                metadata["rows_in_window"] = con.rows(
                    f"select count(*) from marts.{name} where {where}", params
                )[0][0]
            if name in SAMPLED and metadata.get("rows_in_window", 1):
                sample = pl.from_arrow(
                    con.query(
                        f"select {SAMPLED[name]} from marts.{name} where {where} "
                        "order by all desc limit 5",
                        params if where != "true" else [],
                    )
                )
                metadata["sample"] = MetadataValue.md(_markdown(sample))
            yield AssetObservation(asset_key=["marts", name], metadata=metadata)


#: Failing rows shown on a failed check whose dbt test stores them (``store_failures``).
FAILING_ROWS_SHOWN = 20


def stored_failures(event: Any, manifest: Mapping[str, Any]) -> str | None:
    """The table holding a failed check's failing rows, when its dbt test stores them.

    Such tests (``provider_cost_is_known``: one row per model without a provider cost) name
    what failed in those rows; the check's metadata shows them (see with_failing_rows)."""
    if not isinstance(event, AssetCheckResult) or event.passed:
        return None
    unique_id = getattr(event.metadata.get("unique_id"), "value", None)
    node = manifest.get("nodes", {}).get(unique_id) or {}
    if not node.get("config", {}).get("store_failures"):
        return None
    return f'"{node["schema"]}"."{node["alias"]}"'


def with_failing_rows(held, manifest: Mapping[str, Any], warehouse: Warehouse):
    """The held check results with their stored failing rows as metadata (``failing_rows``).

    A result whose rows cannot be read is reported as it came: the check result is never lost."""
    if not held:
        return
    with warehouse.tables(read_only=True) as con:
        for event in held:
            try:
                relation = stored_failures(event, manifest)
                if con.engine == "spark":  # Spark quotes names with backticks
                    relation = relation.replace('"', "`")
                frame = pl.from_arrow(
                    con.query(f"select * from {relation} order by all limit {FAILING_ROWS_SHOWN}")
                )
            except Exception:  # the check result is never lost for its rows
                yield event
                continue
            yield event.with_metadata(
                {**event.metadata, "failing_rows": MetadataValue.md(_markdown(frame))}
            )


def _markdown(frame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows])


#: A run tag that sets the moment invoices are judged at (drafts vs finalized); by default dbt
#: uses the start of its run. Operators and tests set it to re-close as of a given time.
AS_OF_TAG = "tokenbill/as_of"


def invoice_vars(run_tags: Mapping[str, str], invoice_grace_days: str) -> dict[str, str]:
    """The invoicing settings: the grace period (the dbt resource's), as_of from the run tag."""
    values = {"invoice_grace_days": invoice_grace_days}
    if run_tags.get(AS_OF_TAG):
        values["as_of"] = run_tags[AS_OF_TAG]
    return values


def build_errors(run_results: Mapping[str, Any]) -> list[str]:
    """Nodes that errored (a model that did not build, a test whose SQL crashed).

    Test *failures* (status ``fail``) are not errors: they are reported as failed checks."""
    return [
        f"{r['unique_id']}: {(r.get('message') or '').strip()[:300]}"
        for r in run_results.get("results", [])
        if r.get("status") == "error"
    ]


#: Failing rows of a blocking test quoted in the run's failure message.
FAILURE_SAMPLE_ROWS = 5


def blocking_test_failures(
    run_results: Mapping[str, Any], manifest: Mapping[str, Any], warehouse: Warehouse
) -> list[str]:
    """One line per blocking test that failed: which check on which model, its failing rows
    (read again with the test's own compiled SQL, after dbt has released the warehouse) and
    what to do (the test's ``meta.remedy``)."""
    failed = [
        (r, manifest["nodes"][r["unique_id"]])
        for r in run_results.get("results", [])
        if r["unique_id"].startswith("test.")
        and r.get("status") == "fail"
        and dbt_test_blocks(manifest["nodes"][r["unique_id"]])
    ]
    if not failed:
        return []
    lines = []
    with warehouse.tables(read_only=True) as con:
        for result, props in failed:
            meta = (props.get("config") or {}).get("meta") or props.get("meta") or {}
            model = (meta.get("dagster") or {}).get("ref", {}).get("name") or (
                props.get("attached_node") or props["depends_on"]["nodes"][0]
            ).split(".")[-1]
            try:
                found = con.query(
                    f"select * from (\n{result['compiled_code']}\n) limit {FAILURE_SAMPLE_ROWS}"
                )
                rows = [
                    ", ".join(f"{c}={_plain(v)}" for c, v in row.items())
                    for row in found.to_pylist()
                ]
            except Exception as exc:  # the message must not hide the failure it reports
                rows = [f"(rows not readable: {str(exc).splitlines()[0]})"]
            count = result.get("failures")
            remedy = meta.get("remedy") or "see the check's rows in the UI and the README"
            lines.append(
                f"{props['name']} failed on {model} ({count} row(s)): "
                + " / ".join(rows)
                + f"; {remedy}"
            )
    return lines


def _plain(value: Any) -> str:
    return value.isoformat(sep=" ") if isinstance(value, datetime) else str(value)


dbt_catalog = _grain_assets("catalog", None)
dbt_hourly = _grain_assets("hourly", hourly_partitions)
dbt_daily = _grain_assets("daily", daily_partitions)
dbt_monthly = _grain_assets("monthly", monthly_partitions)
