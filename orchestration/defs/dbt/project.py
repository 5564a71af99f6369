"""The dbt project, built once: every ``@dbt_assets`` takes ``project=tokenbill_dbt_project()``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from dagster_dbt import DbtProject

from orchestration.errors import SetupError
from orchestration.settings import REPO_ROOT

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
#: The scripts of this environment (the venv's ``bin``), on PATH or not.
ENV_BIN = Path(sys.executable).parent
#: dbt's CLI in a process that dies with its parent, the run worker, and takes the run's
#: environment on its command line (``child.py``).
DBT_EXECUTABLE = ENV_BIN / "tokenbill-dbt"


def dbt_executable() -> str:
    """``DBT_EXECUTABLE``, which ``make install`` creates (a ``[project.scripts]`` entry)."""
    if not DBT_EXECUTABLE.exists():
        raise SetupError(
            f"{DBT_EXECUTABLE} does not exist: re-run make install (pip install -e .) in this "
            "environment, which installs the tokenbill-dbt entry point the dbt assets run"
        )
    return str(DBT_EXECUTABLE)


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


@contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (``None``: unset), restored on exit.

    Only for loading the project (dagster-dbt's preparer finds ``dbt`` on PATH), which happens
    once per process while the code location loads, before any run: a run never changes the
    environment of its process (each dbt invocation gets its own, ``child.py``).
    """
    saved = {key: os.environ.get(key) for key in values}
    _apply(values)
    try:
        yield
    finally:
        _apply(saved)


def _apply(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
