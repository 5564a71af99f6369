"""Operations' definitions: the jobs, and the schedules and sensors that launch them."""

from __future__ import annotations

from dagster import Definitions

from orchestration.defs.operations.jobs import jobs
from orchestration.defs.operations.schedules import schedules
from orchestration.defs.operations.sensors import sensors


def build_defs() -> Definitions:
    return Definitions(jobs=jobs, schedules=schedules, sensors=sensors)
