"""``make docs``: the dbt docs site of the warehouse, built from what analysts read.

``dbt docs generate`` runs on the dbt target ``analyst`` (``dbt_project/profiles.yml``): an
in-memory DuckDB that attaches the analysts' copy of the warehouse read-only, under the
warehouse's database name so that the catalog matches the models. It never opens the
warehouse itself, so it works while a run writes it (and never makes a run wait); the column
types and row counts it shows are those of the last finished run. Then ``dbt docs serve``
serves the site (``--port``, default 8080) until interrupted; ``--no-serve`` only builds it
(into ``dbt_project/target/docs``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from orchestration.defs.dbt.project import DBT_PROJECT_DIR
from orchestration.settings import analyst_copy_path, load_settings

DOCS_TARGET_PATH = DBT_PROJECT_DIR / "target" / "docs"
DBT = Path(sys.executable).parent / "dbt"


def docs_environment() -> dict[str, str]:
    """The environment of the dbt docs process: the ``analyst`` target on the copy."""
    settings = load_settings()
    copy = analyst_copy_path(settings.warehouse_path, settings.analyst_dir)
    return {
        **os.environ,
        "DO_NOT_TRACK": "1",
        "TOKENBILL_DBT_TARGET": "analyst",
        "TOKENBILL_ANALYST_PATH": str(copy.resolve()),
        # DuckDB names a database after its file; the models were parsed under that name.
        "TOKENBILL_DBT_DATABASE": Path(settings.warehouse_path).stem,
    }


def generate(target_path: Path = DOCS_TARGET_PATH, **run) -> subprocess.CompletedProcess:
    """``dbt docs generate`` against the analysts' copy (the manifest and the catalog)."""
    copy = Path(docs_environment()["TOKENBILL_ANALYST_PATH"])
    if not copy.exists():
        raise SystemExit(
            f"no analysts' copy at {copy} (TOKENBILL_ANALYST_DIR) yet: run the pipeline once "
            "(make demo, or any job: every run publishes it), then make docs"
        )
    return subprocess.run(
        [str(DBT), "docs", "generate", "--target-path", str(target_path), *_project_args()],
        cwd=DBT_PROJECT_DIR,
        env=docs_environment(),
        **run,
    )


def serve(port: int, target_path: Path = DOCS_TARGET_PATH) -> int:
    cmd = [str(DBT), "docs", "serve", "--port", str(port), "--host", "127.0.0.1"]
    cmd += ["--no-browser", "--target-path", str(target_path), *_project_args()]
    print(f"dbt docs on http://127.0.0.1:{port} (Ctrl-C to stop)")
    try:
        return subprocess.call(cmd, cwd=DBT_PROJECT_DIR, env=docs_environment())
    except KeyboardInterrupt:
        return 0


def _project_args() -> list[str]:
    return ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make docs", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--no-serve", action="store_true", help="build the site only")
    args = parser.parse_args(argv)
    built = generate()
    if built.returncode != 0:
        return built.returncode
    print(f"dbt docs built in {DOCS_TARGET_PATH}")
    return 0 if args.no_serve else serve(args.port)


if __name__ == "__main__":
    sys.exit(main())
