"""The enforcement domain: the file a gateway reads (hard limits reached, out of credit)."""

from __future__ import annotations

from dagster import Definitions

from orchestration.defs.enforcement.assets import enforcement_file


def build_defs() -> Definitions:
    return Definitions(assets=[enforcement_file])
