"""``make demo``: the whole pipeline on embedded defaults, and ``make ui`` on the same state.

The demo starts an S3 server on a free localhost port (moto's server mode; boto3 speaks to it
over HTTP exactly as to AWS), generates a realistic month of usage into it, backfills that
month through Dagster (a ``dagster-webserver`` and ``dagster-daemon`` on a real instance under
``.tokenbill/``: one asset backfill per grain, which ``make ui`` then lists under Backfills),
and prints what happened. Re-running it replaces the month exactly: the printed fingerprint of
the warehouse stays the same.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from orchestration.defs.enforcement.summary import spend_controls_summary
from orchestration.environment import demo_s3_port, write_env_file
from orchestration.settings import REPO_ROOT, analyst_copy_path, load_settings, setting

STATE_DIR = REPO_ROOT / ".tokenbill"
DAGSTER_HOME = STATE_DIR / "dagster_home"
#: The invoice export and the statements, copied out of the demo's S3 server (which lives in
#: memory and ends with the demo).
EXPORTS_DIR = STATE_DIR / "exports"
DEFAULT_MONTH = "2026-10"
FINGERPRINT_TABLES = (
    "marts.fct_invoice_line_items",
    "marts.fct_invoices",
    "marts.fct_rated_charges_hourly",
    "marts.fct_rated_charges_monthly",
    "marts.fct_margin_monthly",
    "raw.usage_events",
    "raw.usage_event_duplicates",
    "raw.usage_event_quarantine",
    "raw.ingestion_audit",
    "marts.fct_token_usage_hourly",
    "marts.fct_token_usage_daily",
    "marts.fct_token_usage_monthly",
    "marts.fct_agent_run_costs",
    "marts.fct_request_costs",
    "marts.fct_retry_waste_monthly",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenbill-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--month", default=DEFAULT_MONTH, help="UTC month, YYYY-MM")
    parser.add_argument("--events", type=int, default=200_000, help="valid events to generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ui", action="store_true", help="serve the Dagster UI afterwards")
    parser.add_argument("--port", type=int, default=3000, help="UI port (with --ui)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the month in this process (faster; not listed under the UI's Backfills)",
    )
    args = parser.parse_args(argv)

    _prepare_environment()
    os.environ.update(demo_partitions(args.month))
    server, endpoint = start_s3_server(demo_s3_port())
    services = None
    try:
        env_file = write_env_file("make ui" if args.ui else "make demo")
        print(f"environment for the CLI and Python examples: . {_shown(env_file)}")
        if not (args.ui or args.in_process):
            # They load the code location while the month is generated.
            services = start_services(STATE_DIR / "demo-runs.log")
        settings = load_settings()
        started = time.monotonic()
        manifest = _generate(args, settings.bucket, settings.prefix)
        generated = time.monotonic()
        print(f"generated {args.month} in {generated - started:.1f}s into {endpoint}")
        if args.ui:
            return _serve_ui(args.port)
        try:
            if services:
                _backfill(services, args.month)
            else:
                _backfill_in_process(args.month)
        except DemoFailed as exc:
            print(f"tokenbill demo: {exc}", file=sys.stderr)
            return 1
        print(f"backfilled the month in {time.monotonic() - generated:.1f}s")
        exported = save_exports(settings.bucket, setting("TOKENBILL_EXPORT_PREFIX"), EXPORTS_DIR)
        print(summary(settings.warehouse_path, args.month, manifest, exported))
    finally:
        if services:
            services.stop()
        server.stop()
    return 0


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _prepare_environment() -> None:
    # The embedded S3 server logs every request; Dagster warns about beta parameters.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DAGSTER_HOME", str(DAGSTER_HOME))
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(Path(__file__).with_name("dagster.yaml"), home / "dagster.yaml")
    # Credentials for the local server only; a real deployment uses its own chain.
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "demo"),
        ("AWS_SECRET_ACCESS_KEY", "demo"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)


def demo_partitions(month: str) -> dict[str, str]:
    """The demo's partitions start with its month (``TOKENBILL_FIRST_PARTITION``), so the UI
    lists that month's hours and days rather than thousands of missing ones since January.

    Set before the code location is imported (the partitions are built then), and inherited
    by ``dagster dev`` under ``make ui``."""
    datetime.strptime(month, "%Y-%m")  # fails early on a malformed --month
    return {"TOKENBILL_FIRST_PARTITION": f"{month}-01"}


def start_s3_server(port: int | None = None):
    """moto's S3 server on localhost (``port``, or a free one); sets AWS_ENDPOINT_URL_S3 to it."""
    from moto.server import ThreadedMotoServer

    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    return server, endpoint


def _generate(args, bucket: str, prefix: str) -> dict:
    import boto3

    from tools.generator import generate_month, upload

    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    month = generate_month(args.month, args.events, args.seed)
    upload(client, bucket, prefix, month)
    return month.manifest


def _month_bounds(month: str) -> tuple[datetime, datetime]:
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    return start, start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


#: The runs' console logs at INFO: their progress lines are what the terminal shows.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
#: Generous bounds on a loaded 2-core machine (the default month takes ~2 minutes in all).
READY_TIMEOUT = 300
GRAIN_TIMEOUT = 3600


class DemoFailed(RuntimeError):
    """A run or backfill of the demo failed: one line says which, why and where to look."""


def start_services(log_path: Path):
    """A ``dagster-webserver`` and ``dagster-daemon`` on the demo's instance (storage created
    first), the daemon's output (where the runs log) going to ``log_path`` through a
    ``ProgressTee`` that echoes the progress lines."""
    from orchestration.dagster_services import DagsterServices, create_storage

    create_storage(Path(os.environ["DAGSTER_HOME"]))
    log = open(log_path, "w", buffering=1)  # noqa: SIM115 (closed by services.stop)
    progress = ProgressTee(log, sys.stdout)
    services = DagsterServices(os.environ, STATE_DIR / "demo-services")
    services.start(output={"daemon": progress.write}, on_stop=log.close)
    return services


def _backfill(services, month: str) -> None:
    """Launch the month the way an operator does in the UI, so that the UI lists it under
    *Backfills*: on the demo's ``dagster-webserver`` and ``dagster-daemon``, the catalog as
    one run, then per grain (hours, days, the month) one asset backfill of the grain's job's
    partitioned assets over the month, each launched when the previous grain's run succeeded
    (one ranged run each: single-run backfill policies), and the alerts feed and the
    analysts' copy published last. The runs' progress lines are echoed (``start_services``)."""
    from orchestration.dagster_services import launch_run
    from orchestration.runner import CATALOG_JOB, plan_period

    start, end = _month_bounds(month)
    print(
        f"backfilling {month} through dagster-webserver + dagster-daemon on {services.url} "
        f"(its Backfills page lists the month; runs' output in {_shown(STATE_DIR)}/"
        "demo-runs.log)"
    )
    services.wait_until_ready(READY_TIMEOUT)
    began = time.monotonic()
    run = _await_run(services, launch_run(services, CATALOG_JOB, run_config=RUN_CONFIG))
    _print_run(run, CATALOG_JOB, "(unpartitioned)", time.monotonic() - began)
    backfill_ids = []
    for job_name, first_key, last_key in plan_period(start, end):
        began = time.monotonic()
        backfill_id, run = _backfill_grain(services, month, job_name, first_key, last_key)
        backfill_ids.append(backfill_id)
        span = f"{first_key}..{last_key}"
        _print_run(run, job_name, span, time.monotonic() - began, backfill_id)
    # The unpartitioned steps of the grain jobs, outside the backfills (which take their
    # partitioned assets): the new billing alerts exported, then the analysts' copy, as the
    # jobs' last steps publish them: after the month.
    began = time.monotonic()
    run_id = launch_run(
        services,
        job_name,
        run_config=RUN_CONFIG,
        asset_selection=[["alerts", "alerts_feed"], ["analyst_snapshot"]],
    )
    for backfill_id in backfill_ids:
        _await_backfill_completed(services, backfill_id)
    _print_run(_await_run(services, run_id), "alerts+snapshot", "", time.monotonic() - began)


def _backfill_in_process(month: str) -> None:
    """The same runs in this process (``--in-process``): no webserver or daemon, so nothing
    under the UI's Backfills, and none of their start-up and polling latency."""
    from dagster import DagsterInstance

    from orchestration.definitions import build_defs
    from orchestration.runner import CATALOG_JOB, plan_period, run_job_range

    start, end = _month_bounds(month)
    log_path = STATE_DIR / "demo-runs.log"
    print(f"backfilling {month} in process: one run per grain (dbt output in {log_path})")
    # The code location as the demo's settings say now (a module-level ``defs`` imported
    # earlier in this process would keep the settings of that moment).
    defs = build_defs()
    with DagsterInstance.get() as instance, open(log_path, "w") as log:
        progress = ProgressTee(log, sys.stdout)
        for job_name, first_key, last_key in [(CATALOG_JOB, None, None), *plan_period(start, end)]:
            began = time.monotonic()
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(progress):
                result = run_job_range(
                    defs, job_name, first_key, last_key, instance, log_level="INFO"
                )
            progress.flush()
            span = f"{first_key}..{last_key}" if first_key else "(unpartitioned)"
            print(
                f"  run {result.run_id[:8]} {job_name:<18} {span:<34} "
                f"{'succeeded' if result.success else 'FAILED'} in {time.monotonic() - began:.1f}s"
            )


def _backfill_grain(services, month: str, job_name: str, first_key: str, last_key: str):
    """One asset backfill of ``job_name``'s partitioned assets over [first_key, last_key];
    (backfill id, its run) once that run succeeded. A backfill split into several runs (no
    single-run policy) is waited for until the daemon marks it completed."""
    from dagster import PartitionKeyRange

    from orchestration.dagster_services import (
        get_backfill,
        launch_asset_backfill,
        partitioned_job_assets,
        run_tags,
    )
    from orchestration.defs.operations.jobs import GRAIN_JOBS

    partitions_def = {job.name: job.partitions_def for job in GRAIN_JOBS}[job_name]
    names = partitions_def.get_partition_keys_in_range(PartitionKeyRange(first_key, last_key))
    assets = partitioned_job_assets(services, job_name)
    backfill_id = launch_asset_backfill(
        services,
        assets,
        names,
        title=f"tokenbill demo {month}: {job_name}",
        run_config=RUN_CONFIG,
        tags={"tokenbill/trigger": "demo"},
    )
    wanted = {tuple(path) for path in assets}
    deadline = time.monotonic() + GRAIN_TIMEOUT
    while time.monotonic() < deadline:
        services.assert_alive()
        backfill = get_backfill(services, backfill_id)
        runs = backfill["runs"]
        for run in runs:
            if run["status"] in {"FAILURE", "CANCELED"}:
                raise DemoFailed(_run_failure(services, run, f"backfill {backfill_id}"))
        done = [run for run in runs if run["status"] == "SUCCESS"]
        covered = {
            tuple(a["path"])
            for run in done
            if (run_tags(run).get("dagster/asset_partition_range_start"),
                run_tags(run).get("dagster/asset_partition_range_end")) == (first_key, last_key)
            for a in run["assetSelection"]
        }  # fmt: skip
        status = backfill["status"]
        if (covered >= wanted and len(done) == len(runs)) or status in SUCCESS_STATUSES:
            return backfill_id, done[-1] if done else None
        if status in FAILED_STATUSES:
            error = (backfill.get("error") or {}).get("message", "").strip().splitlines()
            raise DemoFailed(
                f"backfill {backfill_id} ({job_name} {first_key}..{last_key}) ended {status}"
                + (f": {error[0]}" if error else "")
                + f"; see the UI's Backfills page (make ui) or {services.log_dir}"
            )
        time.sleep(1)
    raise DemoFailed(f"backfill {backfill_id} ({job_name}) did not finish in {GRAIN_TIMEOUT}s")


SUCCESS_STATUSES = {"COMPLETED", "COMPLETED_SUCCESS"}
FAILED_STATUSES = {"COMPLETED_FAILED", "FAILED", "CANCELED"}


def _await_backfill_completed(services, backfill_id: str) -> None:
    """The daemon marks a backfill completed on its next pass after the backfill's last run
    (it passes every 30 s), so that the UI lists it as completed."""
    from orchestration.dagster_services import get_backfill, wait_for

    def completed():
        status = get_backfill(services, backfill_id)["status"]
        if status in FAILED_STATUSES:
            raise DemoFailed(f"backfill {backfill_id} ended {status}; see the UI's Backfills")
        return status in SUCCESS_STATUSES

    wait_for(f"backfill {backfill_id} to be marked completed", completed, 120)


def _await_run(services, run_id: str) -> dict:
    from orchestration.dagster_services import wait_for_run

    run = wait_for_run(services, run_id, GRAIN_TIMEOUT)
    if run["status"] != "SUCCESS":
        raise DemoFailed(_run_failure(services, run, "the demo"))
    return run


def _run_failure(services, run: dict, where: str) -> str:
    from orchestration.dagster_services import first_error

    return (
        f"run {run['runId']} of {where} ended {run['status']}: "
        f"{first_error(services, run['runId'])} (the whole log: make ui, then Runs; or "
        f"{STATE_DIR / 'demo-runs.log'})"
    )


def _print_run(run: dict, label: str, span: str, seconds: float, backfill_id: str = "") -> None:
    """A run line as the in-process path prints it, and the backfill that launched it."""
    ran = ""
    if run and run.get("startTime") and run.get("endTime"):
        ran = f" (ran {run['endTime'] - run['startTime']:.1f}s)"
    print(
        f"  run {run['runId'][:8] if run else '-':<8} {label:<18} {span or '-':<34} "
        f"succeeded in {seconds:.1f}s{ran}" + (f"  backfill {backfill_id}" if backfill_id else ""),
        flush=True,
    )


#: A progress line of a run's log ("ingestion: 16/48 hours landed...", "dbt: 3 of 15 nodes
#: done"), as Dagster's console logger writes it: "... - INFO - <job> - <run> - <step> - <msg>".
PROGRESS_LINE = re.compile(r" - INFO - .* - ((?:ingestion|dbt): .*)$")


class ProgressTee(io.TextIOBase):
    """Where the demo's runs log (at INFO): every line goes to the log file, and the progress
    lines of long steps are echoed to the terminal as they come, so a backfill is not silent."""

    def __init__(self, log, terminal):
        self.log, self.terminal, self.pending = log, terminal, ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            match = PROGRESS_LINE.search(line)
            if match:
                print(f"    {match.group(1)}", file=self.terminal, flush=True)
        return len(text)

    def flush(self) -> None:
        self.log.flush()


def _serve_ui(port: int) -> int:
    """Serve ``dagster dev`` on the demo's instance until interrupted; S3 stays up meanwhile.

    This environment's ``bin`` goes first on its PATH, as an activated venv would have it:
    ``dagster dev`` starts the webserver, the daemon and their code servers by name, and
    dagster-dbt looks ``dbt`` up on PATH, so ``make ui`` works from a shell without the venv."""
    bin_dir = Path(sys.executable).parent
    print(f"Dagster UI on http://127.0.0.1:{port} (Ctrl-C to stop)")
    cmd = [
        str(bin_dir / "dagster"),
        "dev",
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "-p",
        str(port),
    ]
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    try:
        return subprocess.call(cmd, cwd=REPO_ROOT, env=env)
    except KeyboardInterrupt:
        return 0


def save_exports(bucket: str, prefix: str, folder: Path) -> tuple[Path, int, int]:
    """Copy the invoice export and statements from S3 into ``folder`` (replaced whole), keeping
    their keys below the prefix; (folder, feeds, statements)."""
    import boto3

    client = boto3.client("s3")
    shutil.rmtree(folder, ignore_errors=True)
    counts = {".jsonl": 0, ".html": 0}
    base = prefix.strip("/") + "/"
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for obj in page.get("Contents", []):
            target = folder / obj["Key"][len(base) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            if target.suffix in counts:
                counts[target.suffix] += 1
    return folder, counts[".jsonl"], counts[".html"]


def summary(
    warehouse_path: str,
    month: str,
    manifest: dict | None = None,
    exported: tuple[Path, int, int] | None = None,
) -> str:
    """What the month's run did, read back from the warehouse."""
    start = datetime.strptime(month, "%Y-%m")
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    params = [start, end]
    with duckdb.connect(warehouse_path, read_only=True) as con:
        audit = con.execute(
            "select sum(object_count), sum(unreadable_object_count), sum(lines_read), "
            "sum(valid_count), sum(duplicate_count), sum(quarantined_count) "
            "from raw.ingestion_audit where partition_hour >= ? and partition_hour < ?",
            params,
        ).fetchone()
        shapes = con.execute(
            "select source_format, sum(records_read), sum(valid_count), sum(duplicate_count), "
            "sum(quarantined_count) from raw.ingestion_format_audit "
            "where partition_hour >= ? and partition_hour < ? group by 1 order by 2 desc, 1",
            params,
        ).fetchall()
        otlp_skipped, unreported = con.execute(
            "select sum(otlp_spans_skipped), sum(unreported_usage_count) "
            "from raw.ingestion_audit where partition_hour >= ? and partition_hour < ?",
            params,
        ).fetchone()
        reasons = con.execute(
            "select reason, count(*) from raw.usage_event_quarantine, "
            "unnest(reason_codes) as r(reason) "
            "where partition_hour >= ? and partition_hour < ? group by 1 order by 2 desc, 1",
            params,
        ).fetchall()
        tops = {
            dim: con.execute(
                f"select {dim}, sum(total_tokens) as tokens, sum(event_count) "
                "from marts.fct_token_usage_monthly where usage_month = ? "
                "group by 1 order by 2 desc, 1 limit 5",
                [start.date()],
            ).fetchall()
            for dim in ("customer_id", "model", "feature")
        }
        totals = con.execute(
            "select sum(input_tokens), sum(cached_input_tokens), sum(cache_write_tokens), "
            "sum(output_tokens), sum(reasoning_tokens) "
            "from marts.fct_token_usage_monthly where usage_month = ?",
            [start.date()],
        ).fetchone()
        revenue = con.execute(
            "select currency, sum(amount), sum(provider_cost) from marts.fct_rated_charges_monthly "
            "where usage_month = ? group by 1 order by 1",
            [start.date()],
        ).fetchall()
        unpriced = con.execute(
            "select count(*), coalesce(sum(quantity), 0) from marts.fct_unpriced_usage "
            "where usage_hour >= ? and usage_hour < ?",
            params,
        ).fetchone()
        # Rankings within one currency: yen and dollars do not compare without FX.
        top_revenue = con.execute(
            "select currency, customer_id, revenue, cost, margin from ("
            "  select customer_id, currency, sum(revenue) as revenue, sum(provider_cost) as cost,"
            "    sum(gross_margin) as margin, row_number() over ("
            "      partition by currency order by sum(revenue) desc, customer_id) as rank"
            "  from marts.fct_margin_monthly where usage_month = ? group by 1, 2"
            ") where rank <= 5 order by currency, rank",
            [start.date()],
        ).fetchall()
        invoiced = con.execute(
            "select currency, count(*), sum(subtotal), sum(credits_applied), sum(total_due) "
            "from marts.fct_invoices where billing_period_start >= ? "
            "and billing_period_start < ? group by 1 order by 1",
            params,
        ).fetchall()
        # The minimum a subscription pays where its usage fell short: fee + prorated minimum.
        invoices = con.execute(
            "select invoices.invoice_id, invoices.customer_id, invoices.currency, "
            "invoices.status, invoices.subtotal, invoices.credits_applied, invoices.total_due, "
            "invoices.line_count, case when fees.minimum_spend_true_up > 0 "
            "then fees.platform_fee_amount + fees.minimum_spend_amount end as minimum_due, "
            "currencies.minor_unit_exponent "
            "from marts.fct_invoices as invoices "
            "left join marts.fct_subscription_fees as fees "
            "on invoices.subscription_id = fees.subscription_id "
            "and invoices.billing_period_start = fees.billing_period_start "
            "join catalog.currencies as currencies on invoices.currency = currencies.currency "
            "where invoices.billing_period_start >= ? and invoices.billing_period_start < ? "
            "order by invoices.currency, invoices.total_due desc, invoices.invoice_id",
            params,
        ).fetchall()
        controls = spend_controls_summary(con, start, end)
        fingerprint = warehouse_fingerprint(con)
        agents = agent_and_alert_lines(con, start, end)

    objects, unreadable, lines, valid, dups, quarantined = (int(v or 0) for v in audit)
    out = [
        "",
        f"tokenbill demo: {month}",
        f"  objects read         {objects:>12,}  ({unreadable} unreadable, quarantined whole)",
        f"  lines read           {lines:>12,}",
        f"  valid                {valid:>12,}",
        f"  duplicates           {dups:>12,}",
        f"  quarantined          {quarantined:>12,}",
        f"  reconciles           {'yes' if lines == valid + dups + quarantined else 'NO'}",
        "  quarantined by reason:",
        *(f"    {code:<26}{n:>10,}" for code, n in reasons),
        "  records by producer shape:        read      valid  duplicate  quarantined",
        *(
            f"    {name:<30}{read:>9,}{ok:>11,}{dup:>11,}{bad:>13,}"
            for name, read, ok, dup, bad in shapes
        ),
        f"  OTLP spans skipped (not GenAI inference): {int(otlp_skipped or 0):,}; "
        f"usage not reported (quarantined, never billed as 0): {int(unreported or 0):,}",
        "  tokens (month): input {:,} (cached {:,}, cache write {:,}), output {:,} "
        "(reasoning {:,})".format(*(int(v or 0) for v in totals)),
    ]
    for dim, rows in tops.items():
        out.append(f"  top {dim.replace('_id', '')}s by tokens:")
        out += [
            f"    {name!s:<32}{tokens:>16,} tokens {events:>10,} events"
            for name, tokens, events in rows
        ]
    out.append("  rated usage (exact, before invoice rounding):")
    out += [
        f"    {cur}  revenue {amount:>18,.6f}   provider cost (USD) {cost:>14,.6f}"
        for cur, amount, cost in revenue
    ]
    out.append(f"  unpriced usage rows: {unpriced[0]} ({int(unpriced[1]):,} tokens)")
    out.append("  top customers by usage revenue, per currency (margin = revenue - provider cost):")
    out += [
        f"    {cur} {cid:<12} revenue {rev:>16,.4f}   cost (USD) {cost:>12,.4f}   margin "
        + (f"{margin:>12,.4f}" if margin is not None else "n/a (not USD)")
        for cur, cid, rev, cost, margin in top_revenue
    ]
    out.append("  invoiced (rounded: each total is its exact amount rounded once):")
    out += [
        f"    {cur} {n:>4} invoices   charges {sub:>16,.2f}   credits {cred:>14,.2f}   "
        f"total due {due:>16,.2f}"
        for cur, n, sub, cred, due in invoiced
    ]
    out += controls
    out += _invoice_table(invoices)
    out += agents
    if manifest:
        out.append(
            "  matches the generator's manifest: " + _compare(manifest, audit, totals, shapes)
        )
    if exported:
        folder, feeds, statements = exported
        out.append(
            f"  invoice export: {feeds} Stripe invoice-item feed(s) (.jsonl) and {statements} "
            f"customer statement(s) (.html) in {folder}/"
        )
    out += [
        f"  warehouse: {warehouse_path}",
        f"  fingerprint of the tables: {fingerprint}  (identical on every re-run)",
        "  analysts:  .venv/bin/python -c \"import duckdb; duckdb.connect('"
        + str(analyst_copy_path(warehouse_path, load_settings().analyst_dir))
        + "', read_only=True).sql('from marts.fct_token_usage_monthly').show()\"",
        "  the UI:    make ui   (then http://127.0.0.1:3000)",
    ]
    return "\n".join(out)


def agent_and_alert_lines(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime):
    """Summary lines: cost per agent run, retry waste, runway and spike alerts, the feed."""
    runs = con.execute(
        "select count(*), count(trace_id), sum(attempts), "
        "sum(provider_cost) filter (where currency = 'USD'), "
        "sum(billed_amount) filter (where currency = 'USD') "
        "from marts.fct_agent_run_costs where first_event_at >= ? and first_event_at < ?",
        [start, end],
    ).fetchone()
    top_run = con.execute(
        "select run_id, customer_id, attempts, model_calls, provider_cost, billed_amount "
        "from marts.fct_agent_run_costs where first_event_at >= ? and first_event_at < ? "
        "and currency = 'USD' and provider_cost is not null and trace_id is not null "
        "order by provider_cost desc, run_id limit 1",
        [start, end],
    ).fetchone()
    waste = con.execute(
        "select sum(wasted_attempts), sum(attempts), sum(wasted_provider_cost), "
        "sum(provider_cost), sum(wasted_billed_amount) from marts.fct_retry_waste_monthly "
        "where usage_month = ? and currency = 'USD'",
        [start.date()],
    ).fetchone()
    alerts = con.execute(
        "select alert_type, count(*) from marts.fct_billing_alerts "
        "where alerted_at >= ? and alerted_at < ? group by 1 order by 1",
        [start, end],
    ).fetchall()
    runway = con.execute(
        "select wallet_id, strftime(alerted_at, '%Y-%m-%d'), value_after, threshold, baseline "
        "from marts.fct_billing_alerts where alert_type = 'low_runway' "
        "and alerted_at >= ? and alerted_at < ? order by alerted_at, wallet_id limit 3",
        [start, end],
    ).fetchall()
    spike = con.execute(
        "select grain, metric, strftime(period_start, '%Y-%m-%d %H:00'), customer_id, "
        "coalesce(model, 'all models'), value, baseline, currency from marts.fct_usage_spikes "
        "where period_start >= ? and period_start < ? "
        "order by grain = 'day' desc, value / nullif(baseline, 0) desc, customer_id, model limit 1",
        [start, end],
    ).fetchone()
    exported = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'billing' and table_name = 'exported_alerts'"
    ).fetchone()[0]
    feed = (
        # Exported ids of alerts the mart still has (an id stays recorded after its alert is
        # gone, and is never exported again).
        con.execute(
            "select count(*) from billing.exported_alerts "
            "semi join marts.fct_billing_alerts using (alert_id)"
        ).fetchone()[0]
        if exported
        else 0
    )
    n_runs, traced, attempts, cost, billed = runs
    out = [
        f"  agent runs: {n_runs:,} ({traced:,} traces, the rest single calls), "
        f"{int(attempts or 0):,} attempts; USD provider cost {cost or 0:,.4f}, "
        f"billed {billed or 0:,.4f}",
    ]
    if top_run:
        rid, cid, att, calls, rcost, rbilled = top_run
        out.append(
            f"    costliest agent run {rid} ({cid}): {att} attempts, {calls} calls, "
            f"cost {rcost:,.4f}, billed "
            + (f"{rbilled:,.4f}" if rbilled is not None else "n/a (unpriced usage)")
        )
    wasted, total, wcost, tcost, wbilled = waste
    if total:
        share = f"{wcost / tcost:.1%}" if wcost is not None and tcost else "n/a"
        out.append(
            f"  retry waste (USD): {int(wasted):,} of {int(total):,} attempts did not succeed; "
            f"they cost {wcost or 0:,.4f} ({share} of provider cost), billed {wbilled or 0:,.4f}"
        )
    out.append(
        "  billing alerts: "
        + (", ".join(f"{t} {n:,}" for t, n in alerts) or "none")
        + f"; {feed:,} of them exported to the alerts feed (billing.exported_alerts)"
    )
    out += [
        f"    low runway: {w} on {day}: {int(days)} day(s) of credit left (alert below "
        f"{int(limit)}), burning {burn:,.4f}/day"
        for w, day, days, limit, burn in runway
    ]
    if spike:
        grain, metric, when, cid, model, value, baseline, currency = spike
        unit = f" {currency}" if metric == "amount" else " tokens"
        out.append(
            f"    spike: {cid} ({model}) {metric} in the {grain} of {when}: {value:,.2f}{unit} "
            f"against a trailing baseline of {baseline:,.2f} per {grain}"
        )
    return out


def _invoice_table(invoices) -> list[str]:
    """Every invoice, with columns as wide as their widest value; where a minimum applies, the
    minimum due (fee + prorated minimum) beside the total and whether they are equal."""
    header = ("invoice", "customer", "cur", "status", "subtotal", "credits", "total due",
              "lines", "minimum due")  # fmt: skip
    rows = []
    for iid, cid, cur, status, sub, cred, due, n, minimum, exponent in invoices:
        amount = f"{{:,.{exponent}f}}".format
        rows.append(
            (iid, cid, cur, status, amount(sub), amount(cred), amount(due), str(n),
             "" if minimum is None else amount(minimum) + _minimum_note(minimum, sub, due))
        )  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = 4  # the text columns; the rest are numbers, right-aligned

    def fmt(row) -> str:
        cells = [
            c.ljust(w) if i < left else (c.rjust(w) if i < len(header) - 1 else c.ljust(w))
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "    " + "  ".join(cells).rstrip()

    title = f"  invoices ({len(rows)}; lines rounded by largest remainder to the rounded total):"
    return [title, fmt(header), *(fmt(r) for r in rows)]


def _minimum_note(minimum, subtotal, total_due) -> str:
    if minimum == total_due:
        return " (= total due)"
    if minimum == subtotal:
        return " (= charges; credits applied)"
    return " (charges differ: top-ups or adjustments)"


def _compare(manifest: dict, audit, totals, shapes=()) -> str:
    """The pipeline's counts against what the generator says it wrote (and, for a month in
    producers' shapes, its records per shape)."""
    lines, tokens = manifest["lines"], manifest["tokens"]
    pairs = {
        "valid": (int(audit[3] or 0), lines["valid_unique"]),
        "duplicates": (int(audit[4] or 0), lines["duplicate"]),
        "quarantined lines": (int(audit[5] or 0), lines["malformed"]),
        "input_tokens": (int(totals[0] or 0), tokens["input_tokens"]),
        "cached_input_tokens": (int(totals[1] or 0), tokens["cached_input_tokens"]),
        "cache_write_tokens": (int(totals[2] or 0), tokens["cache_write_tokens"]),
        "output_tokens": (int(totals[3] or 0), tokens["output_tokens"]),
        "reasoning_tokens": (int(totals[4] or 0), tokens["reasoning_tokens"]),
    }
    diffs = [f"{k} {got:,} != {want:,}" for k, (got, want) in pairs.items() if got != want]
    if "shapes" in manifest:
        got = {name: (int(v), int(d), int(q)) for name, _, v, d, q in shapes}
        want = {
            n: (c["valid"], c["duplicate"], c["quarantined"]) for n, c in manifest["shapes"].items()
        }
        diffs += [f"shape {n} {got.get(n)} != {want.get(n)}" for n in sorted(set(got) | set(want))
                  if got.get(n) != want.get(n)]  # fmt: skip
        what = "counts, token sums and records per shape"
    else:
        what = "counts and token sums"
    return f"yes ({what})" if not diffs else "NO: " + "; ".join(diffs)


def warehouse_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """A digest of every row of the pipeline's tables, independent of row order."""
    digest = hashlib.sha256()
    for table in FINGERPRINT_TABLES:
        count, checksum = con.execute(
            f"select count(*), coalesce(sum(hash(t::varchar)), 0)::varchar from {table} t"
        ).fetchone()
        digest.update(f"{table}:{count}:{checksum};".encode())
    return digest.hexdigest()[:16]


if __name__ == "__main__":
    sys.exit(main())
