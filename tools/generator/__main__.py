"""``python -m tools.generator``: the same as ``tokenbill-generate``."""

import sys

from tools.generator.cli import main

sys.exit(main())
