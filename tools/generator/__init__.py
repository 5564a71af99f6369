"""Deterministic demo data generator: a month of usage-event objects in the S3 layout.

A repository tool, not part of the runtime (``orchestration`` never imports it): numpy comes
from the ``demo`` extra (``pip install -e '.[demo]'``; ``make install`` installs it).
"""

try:
    import numpy  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "the demo generator (tools/generator) needs numpy, from the demo extra: "
        "pip install -e '.[demo]' (make install installs it)"
    ) from exc

from tools.generator.generate import (  # noqa: E402
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
