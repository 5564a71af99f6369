"""Where the pricing catalog lives."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field


class PricingCatalogDir(ConfigurableResource):
    """A directory of catalog files, reviewed by pull request like code."""

    path: str = Field(description="Directory holding customers.yml, plans.yml, ...")

    @property
    def directory(self) -> Path:
        return Path(self.path)
