"""The dbt project, built once: every ``@dbt_assets`` takes ``project=tokenbill_dbt_project()``."""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

from dagster_dbt import DbtProject

from orchestration.defs.dbt.resource import environment
from orchestration.settings import REPO_ROOT

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
#: The scripts of this environment (the venv's ``bin``), on PATH or not.
ENV_BIN = Path(sys.executable).parent
#: dbt's CLI in a process that dies with its parent, the run worker (``child.py``); plain
#: ``dbt`` in an environment installed before that entry point existed (re-run ``make install``).
DBT_EXECUTABLE = (
    ENV_BIN / "tokenbill-dbt" if (ENV_BIN / "tokenbill-dbt").exists() else ENV_BIN / "dbt"
)


@cache
def tokenbill_dbt_project() -> DbtProject:
    """The dbt project, with a manifest ready.

    ``prepare_if_dev`` re-parses only under ``dagster dev``; everywhere else (tests, the demo,
    a fresh clone) the manifest is produced here by ``dbt parse`` if it is missing, so nothing
    depends on a build step having been run by hand. Both run the ``dbt`` found on PATH, so
    this environment's ``bin`` goes first for them: from a shell without the venv activated
    (``make ui``) there is none on PATH.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    with environment({"PATH": os.pathsep.join([str(ENV_BIN), os.environ.get("PATH", "")])}):
        project.prepare_if_dev()
        if not project.manifest_path.exists():
            project.preparer.prepare(project)
    return project
