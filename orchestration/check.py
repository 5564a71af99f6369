"""``tokenbill check``: is this environment ready to run the pipeline?

One line per check (ok / FAILED / skipped), in the order a run needs them: the settings,
``DAGSTER_HOME``, the S3 endpoint, the AWS credentials, the bucket, the warehouse file, the
analysts' copy and the pricing catalog. A failure says what is wrong, where, and which setting
to change (the messages are :mod:`orchestration.errors`', the ones runs raise). Nothing is
written: the warehouse is opened and closed, S3 is only listed. Exit status 1 if anything
failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import boto3
import duckdb
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from orchestration.defs.resources import WAREHOUSE_POOL as POOL
from orchestration.errors import (
    CREDENTIALS_CHAIN,
    ENV_FILE_HINT,
    SetupError,
    dagster_instance,
    explain_dagster_home,
    explain_s3,
    explain_warehouse_lock,
)
from orchestration.settings import (
    OPERATIONS_SETTINGS,
    SETTINGS,
    SettingError,
    analyst_copy_path,
    load_settings,
    operations_setting,
    setting,
)

OK, FAILED, SKIPPED = "ok", "FAILED", "skipped"
#: Quick answers: the check talks to the endpoint once, not with a run's retries.
PROBE = {"connect_timeout": 5, "read_timeout": 15, "retries": {"max_attempts": 1}}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{self.status:<8}{self.name:<16}{self.detail}"] + [
            f"{'':<24}- {p}" for p in self.problems
        ]


def check_settings() -> Check:
    problems = []
    try:
        load_settings()
    except SettingError as exc:
        problems.append(str(exc))
    first = setting("TOKENBILL_FIRST_PARTITION")
    try:
        datetime.strptime(first, "%Y-%m-%d")
    except ValueError:
        problems.append(
            f"TOKENBILL_FIRST_PARTITION={first!r} is not a date: set it to the first UTC day "
            "to ingest, as YYYY-MM-DD"
        )
    memory = setting("TOKENBILL_DUCKDB_MEMORY_LIMIT")
    try:
        duckdb.connect(config={"memory_limit": memory}).close()
    except duckdb.Error:
        problems.append(
            f"TOKENBILL_DUCKDB_MEMORY_LIMIT={memory!r} is not a DuckDB memory size: set it "
            "to e.g. 768MB or 2GB"
        )
    if not problems:
        # The same bounds the schedules and sensors check when they load.
        try:
            for name in OPERATIONS_SETTINGS:
                operations_setting(name)
        except ValueError as exc:
            problems.append(f"{exc}: set it within its bounds (see the README's settings)")
    if problems:
        return Check("settings", FAILED, problems[0], problems[1:])
    overridden = sum(1 for name in SETTINGS if os.environ.get(name))
    return Check(
        "settings",
        OK,
        f"{len(SETTINGS)} settings valid ({overridden} set in the environment, "
        f"{len(SETTINGS) - overridden} default)",
    )


def check_dagster_home() -> Check:
    home = os.environ.get("DAGSTER_HOME")
    if not home or not Path(home).is_dir():
        return Check("DAGSTER_HOME", FAILED, explain_dagster_home())
    config_path = Path(home) / "dagster.yaml"
    if not config_path.is_file():
        return Check(
            "DAGSTER_HOME",
            FAILED,
            f"DAGSTER_HOME={home} has no dagster.yaml: copy orchestration/dagster.yaml there "
            f"(it limits the {POOL} pool to one step, DuckDB's single writer)",
        )
    try:
        with dagster_instance() as instance:
            limit = instance.get_concurrency_config().pool_config.default_pool_limit
            events = type(instance.event_log_storage).__name__
    except SetupError as exc:
        return Check("DAGSTER_HOME", FAILED, str(exc))
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Check(
            "DAGSTER_HOME",
            FAILED,
            f"{config_path} does not load ({type(exc).__name__}: {first_line}): fix it, "
            "starting from orchestration/dagster.yaml",
        )
    if limit != 1:
        return Check(
            "DAGSTER_HOME",
            FAILED,
            f"{config_path} does not limit pools to one step (concurrency.pools."
            f"default_limit is {limit}): set it to 1 as orchestration/dagster.yaml does, or "
            f"runs will fail on the warehouse's lock ({POOL})",
        )
    return Check("DAGSTER_HOME", OK, f"{home} (pool {POOL} limited to 1 step; events: {events})")


def _probe_client(**config):
    return boto3.client("s3", config=Config(**PROBE, **config))


def check_endpoint(bucket: str, prefix: str) -> Check:
    """Does anything answer at the endpoint? Unsigned, so it needs no credentials."""
    client = _probe_client(signature_version=UNSIGNED)
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        pass  # an HTTP answer (403, 404...): the endpoint is there
    except BotoCoreError as exc:
        return Check("S3 endpoint", FAILED, explain_s3(exc, bucket, prefix) or str(exc))
    return Check("S3 endpoint", OK, f"{client.meta.endpoint_url} answers")


def check_credentials() -> Check:
    credentials = boto3.Session().get_credentials()
    if credentials is None:
        return Check(
            "AWS credentials",
            FAILED,
            f"none found: set them in the {CREDENTIALS_CHAIN}, or {ENV_FILE_HINT} for the "
            "demo's S3 server",
        )
    key = credentials.access_key or ""
    return Check("AWS credentials", OK, f"found ({credentials.method}, key id {key[:4]}...)")


def check_bucket(bucket: str, prefix: str) -> Check:
    where = f"s3://{bucket}/{prefix + '/' if prefix else ''}"
    try:
        listed = _probe_client().list_objects_v2(
            Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1
        )
    except (BotoCoreError, ClientError) as exc:
        message = explain_s3(exc, bucket, prefix)
        return Check("S3 bucket", FAILED, message or f"listing {where} failed: {exc}")
    has_objects = "has objects" if listed.get("KeyCount") else "no objects under the prefix yet"
    return Check("S3 bucket", OK, f"{where} is listable ({has_objects})")


def _writable_dir(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (itself included) if writable, else None."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate if os.access(candidate, os.W_OK) else None
    return None


def check_warehouse(path: str) -> Check:
    file = Path(path)
    if not file.exists():
        if _writable_dir(file.parent) is None:
            return Check(
                "warehouse",
                FAILED,
                f"{path} (TOKENBILL_WAREHOUSE_PATH) cannot be created: its directory is not "
                "writable; set TOKENBILL_WAREHOUSE_PATH to a writable, persistent path",
            )
        return Check("warehouse", OK, f"{path} does not exist yet; the first run creates it")
    if not os.access(file, os.W_OK):
        return Check(
            "warehouse",
            FAILED,
            f"{path} (TOKENBILL_WAREHOUSE_PATH) is not writable by this user: fix its "
            "permissions or set TOKENBILL_WAREHOUSE_PATH",
        )
    try:
        duckdb.connect(path).close()
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            return Check("warehouse", FAILED, explain_warehouse_lock(path, exc, 0))
        return _unreadable(path, exc)
    except duckdb.Error as exc:
        return _unreadable(path, exc)
    size = file.stat().st_size / 2**20
    return Check("warehouse", OK, f"{path} ({size:,.1f} MiB; writable, not locked)")


def _unreadable(path: str, exc: Exception) -> Check:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return Check(
        "warehouse",
        FAILED,
        f"{path} (TOKENBILL_WAREHOUSE_PATH) does not open with DuckDB {duckdb.__version__} "
        f"({first_line}): point TOKENBILL_WAREHOUSE_PATH at the warehouse file",
    )


def check_analyst_copy(warehouse_path: str, analyst_dir: str) -> Check:
    copy = analyst_copy_path(warehouse_path, analyst_dir)
    directory = copy.parent
    if _writable_dir(directory) is None:
        return Check(
            "analyst copy",
            FAILED,
            f"{directory} (TOKENBILL_ANALYST_DIR) is not writable: runs could not publish "
            "the analysts' copy; set TOKENBILL_ANALYST_DIR to a writable directory",
        )
    if not copy.exists():
        return Check("analyst copy", OK, f"{copy} not published yet: the next run publishes it")
    published = datetime.fromtimestamp(copy.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M")
    return Check("analyst copy", OK, f"{copy} (published {published} UTC)")


def check_catalog(catalog_dir: str) -> Check:
    from contracts.catalog import CatalogError
    from orchestration.defs.rating.catalog import load_catalog_dir

    directory = Path(catalog_dir)
    if not directory.is_dir():
        return Check(
            "catalog",
            FAILED,
            f"{catalog_dir} (TOKENBILL_CATALOG_DIR) is not a directory: set "
            "TOKENBILL_CATALOG_DIR to the pricing catalog's directory",
        )
    try:
        loaded = load_catalog_dir(directory)
    except CatalogError as exc:
        return Check(
            "catalog",
            FAILED,
            f"{catalog_dir} (TOKENBILL_CATALOG_DIR) has {len(exc.problems)} problem(s); fix "
            "them (catalog_job applies nothing until it loads):",
            [str(p) for p in exc.problems],
        )
    return Check(
        "catalog",
        OK,
        f"{catalog_dir}: {len(loaded.catalog.customers)} customers, "
        f"{len(loaded.catalog.plans)} plans, {len(loaded.catalog.subscriptions)} subscriptions, "
        f"{len(loaded.wallets)} wallets",
    )


def run_checks() -> list[Check]:
    try:
        settings = load_settings()
    except SettingError:
        settings = None
    checks = [check_settings(), check_dagster_home()]
    bucket = setting("TOKENBILL_S3_BUCKET")
    prefix = setting("TOKENBILL_S3_PREFIX").strip("/")
    endpoint, credentials = check_endpoint(bucket, prefix), check_credentials()
    checks += [endpoint, credentials]
    if endpoint.status == OK and credentials.status == OK:
        checks.append(check_bucket(bucket, prefix))
    else:
        checks.append(Check("S3 bucket", SKIPPED, "needs the endpoint and credentials above"))
    warehouse = settings.warehouse_path if settings else setting("TOKENBILL_WAREHOUSE_PATH")
    checks += [
        check_warehouse(warehouse),
        check_analyst_copy(warehouse, setting("TOKENBILL_ANALYST_DIR")),
        check_catalog(setting("TOKENBILL_CATALOG_DIR")),
    ]
    return checks


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    checks = run_checks()
    for check in checks:
        for line in check.lines():
            out(line)
    failed = [c.name for c in checks if c.status == FAILED]
    out(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}" if failed else "ready")
    return 1 if failed else 0
