"""Operations' definitions: the jobs, the schedules and sensors that launch them, and the
run-worker watchdog."""

from __future__ import annotations

from dagster import Definitions

from orchestration.defs.operations.jobs import jobs
from orchestration.defs.operations.schedules import schedules
from orchestration.defs.operations.sensors import sensors
from orchestration.defs.operations.watchdog import sensors as watchdog_sensors


def build_defs() -> Definitions:
    return Definitions(jobs=jobs, schedules=schedules, sensors=[*sensors, *watchdog_sensors])
