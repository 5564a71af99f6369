"""``tokenbill check`` as an operator runs it: a real process, a real S3 server (moto), a real
Dagster home and DuckDB file; each wrong setting gives one FAILED line naming the setting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
CATALOG_DIR = Path(__file__).parent / "fixtures" / "catalog_e2e"
NAMES = [
    "settings",
    "DAGSTER_HOME",
    "S3 endpoint",
    "AWS credentials",
    "S3 bucket",
    "warehouse",
    "analyst copy",
    "catalog",
]


def tokenbill_check(env: dict[str, str]) -> tuple[int, dict[str, tuple[str, str]], list[str]]:
    """Exit code, {check name: (status, detail)} and every line printed."""
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "check"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stdout.splitlines()
    checks = {}
    for line in lines:
        for name in NAMES:
            if line[8:].startswith(name + " "):
                checks[name] = (line[:8].strip(), line[24:])
    assert list(checks) == NAMES, proc.stdout + proc.stderr
    return proc.returncode, checks, lines


@pytest.fixture
def env(tmp_path, s3_endpoint, bucket) -> dict[str, str]:
    """A ready environment: what ``.tokenbill/env`` gives a shell, in a temporary place."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),  # no ~/.aws of the machine running the tests
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-role probe on a laptop or CI
        "DO_NOT_TRACK": "1",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "DAGSTER_HOME": str(home),
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "TOKENBILL_S3_BUCKET": bucket,
        "TOKENBILL_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
        "TOKENBILL_ANALYST_DIR": str(tmp_path / "analyst"),
        "TOKENBILL_CATALOG_DIR": str(CATALOG_DIR),
    }


def test_a_ready_environment_passes_every_check(env):
    code, checks, lines = tokenbill_check(env)
    assert code == 0
    assert {name: status for name, (status, _) in checks.items()} == dict.fromkeys(NAMES, "ok")
    assert checks["S3 bucket"][1] == (
        f"s3://{env['TOKENBILL_S3_BUCKET']}/usage/ is listable (no objects under the prefix yet)"
    )
    assert checks["catalog"][1] == (
        f"{CATALOG_DIR}: 3 customers, 2 plans, 3 subscriptions, 0 wallets"
    )
    assert lines[-1] == "ready"


def test_a_wrong_bucket_names_the_bucket_and_the_setting(env):
    env["TOKENBILL_S3_BUCKET"] = "tb-no-such-bucket"
    code, checks, lines = tokenbill_check(env)
    assert code == 1
    assert checks["S3 bucket"] == (
        "FAILED",
        f"bucket 'tb-no-such-bucket' does not exist at {env['AWS_ENDPOINT_URL_S3']} "
        "(AWS_ENDPOINT_URL_S3): set TOKENBILL_S3_BUCKET to the bucket producers write to (or "
        "create it), or AWS_ENDPOINT_URL_S3 to the endpoint that has it",
    )
    assert [n for n, (status, _) in checks.items() if status != "ok"] == ["S3 bucket"]
    assert lines[-1] == "1 of 8 checks failed: S3 bucket"


def test_a_closed_endpoint_names_aws_endpoint_url_s3(env):
    closed = f"http://127.0.0.1:{free_port()}"
    env["AWS_ENDPOINT_URL_S3"] = closed
    code, checks, _ = tokenbill_check(env)
    assert code == 1
    assert checks["S3 endpoint"] == (
        "FAILED",
        f"cannot connect to the S3 endpoint {closed} (AWS_ENDPOINT_URL_S3) to read "
        f"s3://{env['TOKENBILL_S3_BUCKET']}/usage/: set AWS_ENDPOINT_URL_S3 to a reachable S3 "
        "endpoint (unset for AWS), or start the demo's S3 server (make ui) and source "
        ".tokenbill/env (written by make demo and make ui)",
    )
    assert checks["S3 bucket"] == ("skipped", "needs the endpoint and credentials above")


def test_missing_credentials_name_the_credentials_chain(env):
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    code, checks, _ = tokenbill_check(env)
    assert code == 1
    assert checks["S3 endpoint"][0] == "ok"  # asked without credentials
    assert checks["AWS credentials"] == (
        "FAILED",
        "none found: set them in the AWS credentials chain (AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials or an instance role), or "
        "source .tokenbill/env (written by make demo and make ui) for the demo's S3 server",
    )
    assert checks["S3 bucket"][0] == "skipped"


def test_an_unset_dagster_home_says_where_to_get_one(env):
    del env["DAGSTER_HOME"]
    code, checks, _ = tokenbill_check(env)
    assert code == 1
    assert checks["DAGSTER_HOME"] == (
        "FAILED",
        "DAGSTER_HOME is not set: source .tokenbill/env (written by make demo and make ui), "
        "or export DAGSTER_HOME=<a persistent directory> holding a dagster.yaml like "
        "orchestration/dagster.yaml",
    )


def test_a_dagster_home_without_the_pool_limit_fails(env):
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    code, checks, _ = tokenbill_check(env)
    assert code == 1
    assert checks["DAGSTER_HOME"] == (
        "FAILED",
        f"{env['DAGSTER_HOME']}/dagster.yaml does not limit pools to one step (concurrency."
        "pools.default_limit is None): set it to 1 as orchestration/dagster.yaml does, or runs "
        "will fail on the warehouse's lock (tokenbill_warehouse)",
    )


def test_a_bad_catalog_lists_its_problems_with_file_entry_and_field(env, tmp_path):
    catalog = tmp_path / "catalog"
    shutil.copytree(CATALOG_DIR, catalog)
    plans = catalog / "plans.yml"
    plans.write_text(plans.read_text().replace('unit_price: "2.50"', 'unit_price: "-2.50"', 1))
    env["TOKENBILL_CATALOG_DIR"] = str(catalog)
    code, checks, lines = tokenbill_check(env)
    assert code == 1
    assert checks["catalog"] == (
        "FAILED",
        f"{catalog} (TOKENBILL_CATALOG_DIR) has 1 problem(s); fix them (catalog_job applies "
        "nothing until it loads):",
    )
    problem = lines[lines.index(next(x for x in lines if "catalog " in x[8:24])) + 1]
    assert problem.strip().startswith(
        "- plans.yml: plans[0] (plan_id=pro): prices.0.versions.0.unit_price:"
    )


def test_a_locked_warehouse_says_who_holds_it(env):
    path = env["TOKENBILL_WAREHOUSE_PATH"]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('open', flush=True); "
            "sys.stdin.read()",
            path,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "open\n"
        code, checks, _ = tokenbill_check(env)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert code == 1
    assert checks["warehouse"] == (
        "FAILED",
        f"the warehouse {path} (TOKENBILL_WAREHOUSE_PATH) is locked by "
        f"{Path(sys.executable).resolve()} (PID {holder.pid}): close that session (analysts "
        "read the published snapshot in TOKENBILL_ANALYST_DIR, never the warehouse) or wait "
        "for its run to finish",
    )
