"""The dbt project, built once: every ``@dbt_assets`` takes ``project=tokenbill_dbt_project()``."""

from __future__ import annotations

import os
from functools import cache

from dagster_dbt import DbtProject

from orchestration.settings import REPO_ROOT

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"


@cache
def tokenbill_dbt_project() -> DbtProject:
    """The dbt project, with a manifest ready.

    ``prepare_if_dev`` re-parses only under ``dagster dev``; everywhere else (tests, the demo,
    a fresh clone) the manifest is produced here by ``dbt parse`` if it is missing, so nothing
    depends on a build step having been run by hand.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        project.preparer.prepare(project)
    return project
