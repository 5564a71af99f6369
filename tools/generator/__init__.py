"""Deterministic demo data generator: a month of usage-event objects in the S3 layout."""

from tools.generator.generate import (
    FEATURES,
    LINE_REASONS,
    MODELS,
    PROVIDERS,
    GeneratedMonth,
    GeneratedObject,
    generate_month,
    generation_manifest,
    upload,
    write_local,
)

__all__ = [
    "FEATURES",
    "LINE_REASONS",
    "MODELS",
    "PROVIDERS",
    "GeneratedMonth",
    "GeneratedObject",
    "generate_month",
    "generation_manifest",
    "upload",
    "write_local",
]
