"""Invoicing's definitions: the export of finalized invoices (the invoices are dbt models)."""

from __future__ import annotations

from dagster import Definitions

from orchestration.defs.invoicing.assets import invoice_export


def build_defs() -> Definitions:
    return Definitions(assets=[invoice_export])
