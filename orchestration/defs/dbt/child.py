"""``tokenbill-dbt``: dbt's own CLI, in a process that dies with the run that started it.

dagster-dbt starts ``dbt build`` as a plain subprocess of the run worker. When the run worker is
killed (SIGKILL, the OOM killer, a node restart), nothing tells dbt: it keeps running, keeps the
warehouse's write lock and races the next run. This entry point asks Linux to send dbt SIGKILL
when its parent dies (``PR_SET_PDEATHSIG``), then runs dbt's CLI in the same process, so the
flag stays on the process that does the work. ``TOKENBILL_DBT_PARENT_PID`` (set by the asset)
closes the race of a parent that died between starting this process and the ``prctl`` call.
Elsewhere than Linux it is plain ``dbt``.

Two more things, so that the run worker needs no private dagster-dbt API and never changes
its own environment:

* The environment of one invocation comes first on its command line, as ``env(1)`` takes it:
  ``tokenbill-dbt NAME=VALUE --unset=NAME ... build ...`` sets or unsets each name in this
  process before dbt starts (dagster-dbt's ``DbtCliResource.cli`` has no per-call environment;
  the dbt window travels this way instead of as ``--vars``, which would make dbt re-parse the
  project on every run). The command shown on a failed run is therefore complete: pasted
  into a shell it rebuilds the same window.
* ``TOKENBILL_DBT_RUN_FIRST`` (e.g. ``run-operation create_lake_sources``, what the Spark
  engine needs before every build: the raw lake's tables registered and their file listings
  refreshed) is a dbt command run first, in this same process, with the same
  ``--profiles-dir``/``--project-dir``/``--target``/``--target-path``: on dbt-spark's session
  method both share one Spark (one JVM start, not two). If it fails, the command is not run.
* ``tokenbill-dbt --version`` prints the version of this environment's ``dbt-core`` without
  importing dbt: dagster-dbt asks it once per resource instance (once per dbt step), and
  starting dbt only to answer would cost every step about two seconds.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys
from importlib.metadata import version as package_version

PR_SET_PDEATHSIG = 1
#: The pid of the process that starts dbt; the asset passes it on the command line.
PARENT_PID_ENV = "TOKENBILL_DBT_PARENT_PID"
#: Leading arguments that set (``NAME=VALUE``) or unset (``--unset=NAME``) a variable.
ASSIGNMENT = re.compile(r"(?P<name>[A-Z_][A-Z0-9_]*)=(?P<value>.*)", re.S)
UNSET = "--unset="
#: A dbt command to run before the one on the command line, in the same process.
RUN_FIRST_ENV = "TOKENBILL_DBT_RUN_FIRST"
#: Options of the command line that the command run first takes too.
SHARED_OPTIONS = ("--profiles-dir", "--project-dir", "--target", "--target-path")


def environment_args(values: dict[str, str | None]) -> list[str]:
    """The leading arguments that give dbt exactly ``values`` (``None``: unset)."""
    return [
        f"{UNSET}{name}" if value is None else f"{name}={value}" for name, value in values.items()
    ]


def apply_environment_args(argv: list[str]) -> list[str]:
    """Apply the leading assignments of ``argv`` to this process's environment; the rest."""
    for index, arg in enumerate(argv):
        if arg.startswith(UNSET):
            os.environ.pop(arg[len(UNSET) :], None)
        elif (match := ASSIGNMENT.fullmatch(arg)) is not None:
            os.environ[match["name"]] = match["value"]
        else:
            return argv[index:]
    return []


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


def shared_options(args: list[str]) -> list[str]:
    """The ``SHARED_OPTIONS`` of ``args``, with their values (``--opt value`` or ``--opt=v``)."""
    shared = []
    for index, arg in enumerate(args):
        name = arg.split("=", 1)[0]
        if name in SHARED_OPTIONS:
            shared += [arg] if "=" in arg else args[index : index + 2]
    return shared


def run_first(args: list[str]) -> None:
    """Run ``TOKENBILL_DBT_RUN_FIRST`` (if set) with the options of ``args``; exit 2 if it
    fails."""
    first = os.environ.pop(RUN_FIRST_ENV, "").split()
    if not first:
        return
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke([*first, *shared_options(args)])
    if not result.success:
        sys.stderr.write(f"tokenbill-dbt: {' '.join(first)} failed: {result.exception}\n")
        sys.exit(2)


def version_text() -> str:
    """What ``tokenbill-dbt --version`` prints (dbt's first lines, with the same version)."""
    return f"Core:\n  - installed: {package_version('dbt-core')}\n"


def main() -> None:
    args = apply_environment_args(sys.argv[1:])
    if args == ["--version"]:
        sys.stdout.write(version_text())
        sys.exit(0)
    die_with_parent()
    run_first(args)
    from dbt.cli.main import cli

    sys.argv = ["dbt", *args]
    sys.exit(cli())


if __name__ == "__main__":
    main()
