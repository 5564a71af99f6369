"""The ``tokenbill`` command (``python -m orchestration.cli``): operator tools.

``tokenbill check`` verifies the environment a run needs (see :mod:`orchestration.check`).
"""

from __future__ import annotations

import argparse
import sys
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenbill", description="tokenbill operator tools")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "check",
        help="verify settings, DAGSTER_HOME, S3 (endpoint, credentials, bucket), the "
        "warehouse, the analysts' copy and the catalog; one line each, exit 1 on a failure",
    )
    args = parser.parse_args(argv)
    # Dagster's beta and deprecation warnings are for developers, not in an operator's report.
    warnings.filterwarnings("ignore")
    if args.command == "check":
        from orchestration.check import main as check

        return check()
    return 2


if __name__ == "__main__":
    sys.exit(main())
