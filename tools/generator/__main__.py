"""``python -m tools.generator`` (from the checkout): see ``tools/generator/cli.py``."""

import sys

from tools.generator.cli import main

sys.exit(main())
