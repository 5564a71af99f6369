"""``make demo``: the whole pipeline on embedded defaults, and ``make ui`` on the same state.

The demo starts an S3 server on a free localhost port (moto's server mode; boto3 speaks to it
over HTTP exactly as to AWS), generates a realistic month of usage into it, backfills that
month through Dagster (one run per grain, on a real instance under ``.tokenbill/``), and
prints what happened. Re-running it replaces the month exactly: the printed fingerprint of
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
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenbill-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--month", default=DEFAULT_MONTH, help="UTC month, YYYY-MM")
    parser.add_argument("--events", type=int, default=200_000, help="valid events to generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ui", action="store_true", help="serve the Dagster UI afterwards")
    parser.add_argument("--port", type=int, default=3000, help="UI port (with --ui)")
    args = parser.parse_args(argv)

    _prepare_environment()
    os.environ.update(demo_partitions(args.month))
    server, endpoint = start_s3_server(demo_s3_port())
    try:
        env_file = write_env_file("make ui" if args.ui else "make demo")
        print(f"environment for the CLI and Python examples: . {env_file.relative_to(REPO_ROOT)}")
        settings = load_settings()
        started = time.monotonic()
        manifest = _generate(args, settings.bucket, settings.prefix)
        generated = time.monotonic()
        print(f"generated {args.month} in {generated - started:.1f}s into {endpoint}")
        if args.ui:
            return _serve_ui(args.port)
        _backfill(args.month)
        print(f"backfilled the month in {time.monotonic() - generated:.1f}s")
        exported = save_exports(settings.bucket, setting("TOKENBILL_EXPORT_PREFIX"), EXPORTS_DIR)
        print(summary(settings.warehouse_path, args.month, manifest, exported))
    finally:
        server.stop()
    return 0


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

    from orchestration.generator import generate_month, upload

    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    month = generate_month(args.month, args.events, args.seed)
    upload(client, bucket, prefix, month)
    return month.manifest


def _backfill(month: str) -> None:
    from dagster import DagsterInstance

    from orchestration.definitions import defs
    from orchestration.runner import CATALOG_JOB, plan_period, run_job_range

    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    log_path = STATE_DIR / "demo-runs.log"
    print(f"backfilling {month}: one run per grain (dbt output in {log_path})")
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
        fingerprint = warehouse_fingerprint(con)

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
    out += _invoice_table(invoices)
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
