"""``tokenbill-dbt``: dbt's own CLI, in a process that dies with the run that started it.

dagster-dbt starts ``dbt build`` as a plain subprocess of the run worker. When the run worker is
killed (SIGKILL, the OOM killer, a node restart), nothing tells dbt: it keeps running, keeps the
warehouse's write lock and races the next run. This entry point asks Linux to send dbt SIGKILL
when its parent dies (``PR_SET_PDEATHSIG``), then runs dbt's CLI in the same process, so the
flag stays on the process that does the work. ``TOKENBILL_DBT_PARENT_PID`` (set by the asset)
closes the race of a parent that died between starting this process and the ``prctl`` call.

Elsewhere than Linux it is plain ``dbt``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
#: The pid of the process that starts dbt; the asset sets it in dbt's environment.
PARENT_PID_ENV = "TOKENBILL_DBT_PARENT_PID"


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent exits (Linux only).

    Returns whether it is armed. Exits at once if the expected parent is already gone.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):
        # The parent died before the flag was set: it would never fire.
        os._exit(128 + int(sig))
    return True


def main() -> None:
    die_with_parent()
    from dbt.cli.main import cli

    sys.argv[0] = "dbt"
    sys.exit(cli())


if __name__ == "__main__":
    main()
