"""The dbt CLI resource: dagster-dbt's, run from this environment with the window as env vars."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from importlib.metadata import version as package_version
from pathlib import Path

from dagster_dbt import DbtCliResource
from packaging import version


class TokenbillDbtCliResource(DbtCliResource):
    """``DbtCliResource`` for the dbt installed beside this interpreter.

    dagster-dbt asks ``dbt --version`` (a Python process start and dbt's imports, ~2 s) once
    per resource instance, which is once per dbt step of every run; the dbt it runs here is
    the ``dbt-core`` package of this environment, whose version is known without asking.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        if Path(self.dbt_executable).parent != Path(sys.executable).parent:
            return super()._cli_version
        return version.parse(package_version("dbt-core"))


@contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (``None``: unset), restored on exit.

    The dbt subprocess inherits the environment at the moment it starts (``DbtCliResource.cli``
    starts it), so wrapping that call passes the values to exactly that invocation.
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
