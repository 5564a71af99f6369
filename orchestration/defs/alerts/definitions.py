"""The alerts domain: the billing alerts feed (fct_billing_alerts to S3, each alert once)."""

from __future__ import annotations

from dagster import Definitions

from orchestration.defs.alerts.assets import alerts_feed


def build_defs() -> Definitions:
    return Definitions(assets=[alerts_feed])
