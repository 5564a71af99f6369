"""``python -m bench.route_local``: ingestion's routing alone, on a generated month kept on disk.

A profiling aid, not the benchmark: no S3, no Dagster, no landing. The month is generated
once into ``--workdir`` (``--events``, ``--seed``, ``--shapes``), read back hour by hour as
:class:`HourInput` (the bodies as S3 would serve them), batched as the asset batches, and
routed by ``route_hours`` with the helpers the bench's instrumented pass times wrapped by
timers (``map_lines`` among them: the producer shapes' detection and mapping). ``--repeat``
routes the whole month that many times and reports the fastest pass. Prints wall and CPU
(this process, DuckDB's threads included) seconds per helper.

    python -m bench.route_local --events 200000 --shapes mixed
    python -m bench.route_local --events 200000 --shapes canonical
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

HELPERS = (
    "split_lines",
    "map_lines",
    "extract_wire_fields",
    "validate_wire_events",
    "_deduplicate",
)


def _month_dir(workdir: Path, month: str, events: int, seed: int, shapes: str) -> Path:
    from tools.generator import generate_month
    from tools.generator.generate import write_local

    directory = workdir / f"{month}-{events}-s{seed}-{shapes}"
    if not (directory / "done").exists():
        write_local(directory, generate_month(month, events, seed, shapes))
        (directory / "done").write_text("")
    return directory


def _hours(directory: Path) -> Iterator:
    from orchestration.defs.ingestion.parsing import HourInput, S3Object

    by_hour: dict[tuple[str, int], list[Path]] = defaultdict(list)
    for path in sorted(directory.rglob("part-*")):
        day, hour = path.parent.parent.name.removeprefix("dt="), path.parent.name
        by_hour[(day, int(hour.removeprefix("hour=")))].append(path)
    for (day, hour), paths in sorted(by_hour.items()):
        start = datetime.strptime(day, "%Y-%m-%d").replace(hour=hour, tzinfo=UTC)
        objects = [
            S3Object(str(p.relative_to(directory)), "local", p.stat().st_size) for p in paths
        ]
        yield HourInput(start, objects, [p.read_bytes() for p in paths])


def route_month(directory: Path) -> dict[str, float]:
    """One routing pass over the month: seconds per helper, the rest, the total and CPU."""
    import orchestration.defs.ingestion.parsing as parsing
    from bench.timers import timed_functions
    from orchestration.defs.ingestion.assets import BATCH_BYTES

    items = list(_hours(directory))
    for item in items:
        item.decode()
    route, cpu = 0.0, time.process_time()
    records = 0
    with timed_functions(parsing, HELPERS) as timers:
        for batch in parsing.batches(iter(items), BATCH_BYTES):
            t = time.perf_counter()
            routed = parsing.route_hours(batch)
            route += time.perf_counter() - t
            records += routed.valid.height + routed.duplicates.height + routed.quarantine.height
    return {
        **{name: timers[name] for name in HELPERS},
        "rest": route - sum(timers.values()),
        "route_hours": route,
        "cpu": time.process_time() - cpu,
        "records": records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.route_local", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--month", default="2026-10")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shapes", choices=("mixed", "canonical"), default="mixed")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tokenbill-route-local"))
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    directory = _month_dir(args.workdir, args.month, args.events, args.seed, args.shapes)
    best = min((route_month(directory) for _ in range(args.repeat)), key=lambda r: r["route_hours"])
    print(
        f"{args.events:,} events, {args.shapes}: {best['records']:,} records; route_hours "
        f"{best['route_hours']:.2f} s wall, {best['cpu']:.2f} s CPU; "
        + ", ".join(f"{name} {best[name]:.2f} s" for name in (*HELPERS, "rest"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
