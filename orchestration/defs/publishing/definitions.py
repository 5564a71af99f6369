"""Publishing's definitions: the analysts' copy, the last step of every job."""

from __future__ import annotations

from dagster import Definitions

from orchestration.defs.publishing.assets import analyst_snapshot


def build_defs() -> Definitions:
    return Definitions(assets=[analyst_snapshot])
