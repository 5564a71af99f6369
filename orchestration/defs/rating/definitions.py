"""Rating's definitions: the pricing catalog and the directory it is read from."""

from __future__ import annotations

from dagster import Definitions

from orchestration.defs.rating.assets import pricing_catalog
from orchestration.defs.rating.resources import PricingCatalogDir
from orchestration.settings import env_or_default


def build_defs(catalog_dir: str | None = None) -> Definitions:
    """``catalog_dir`` overrides TOKENBILL_CATALOG_DIR (tests, the demo)."""
    return Definitions(
        assets=[pricing_catalog],
        resources={
            "catalog_dir": PricingCatalogDir(
                path=catalog_dir or env_or_default("TOKENBILL_CATALOG_DIR")
            )
        },
    )
