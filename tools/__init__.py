"""Repository tools that are not part of the runtime package: the demo data generator and the
demo catalog writer (``tools.generator``, numpy from the ``demo`` extra) and the provider cost
card refresh (``tools.provider_card``)."""
