"""``make bench``: how fast, how big, how incremental the month's pipeline is.

A benchmark, not a test: it measures and reports, it never asserts a time. One invocation:

1. starts moto's S3 server (``orchestration.demo.start_s3_server``) in a child process and
   generates ``--events`` events for ``--month`` into it (timed, not part of the pipeline);
2. backfills the month as the demo does (catalog, then one ranged run per grain) on a fresh
   warehouse and a fresh ``DAGSTER_HOME``; reads each run's event log for per-step seconds,
   times every event-log write, and samples this process's RSS during the backfill;
3. re-runs ingestion's functions directly on the same objects (an instrumented pass into a
   scratch warehouse) to split S3 fetch / parse / validation / dedup / landing;
4. measures a bare reference: boto3 + DuckDB summing tokens per hour, customer and model;
5. times one incremental hourly run after one day of history and after the whole month, and
   one on an hour with no data (the fixed overhead);
6. prints everything and appends a section to BENCHMARKS.md.

``--engine spark`` does 1 and 2 only, with ``TOKENBILL_ENGINE=spark`` (the lake, dbt-spark, the
assets' Spark session), and appends a Spark section (:func:`record_spark`).

``python -m bench.run --events N [--month 2026-10] [--seed 7] [--shapes mixed|canonical]
[--workdir DIR] [--skip-generate]`` (``--skip-generate`` re-uploads the objects a previous run
with the same month, events, seed and shapes kept in the work dir instead of generating them
again). ``--shapes mixed`` (the default, as the demo) sends ~60% of the events in producers'
own shapes (issue 14); ``canonical`` sends the same kind of month all canonical. The bare
reference reads the top-level canonical fields only, so on a mixed month it sums the canonical
lines (it still fetches and parses every line).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import logging
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.timers import timed_functions
from orchestration.settings import REPO_ROOT, SETTINGS

DEFAULT_WORKDIR = Path("/tmp/tokenbill-bench")
BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"
BUCKET = "tokenbill-bench"
PREFIX = "usage"
GIB = 1024**3
#: The issue's targets.
TARGET_EVENTS = 10_000_000
TARGET_SECONDS = 300.0
TARGET_RATIO = 3.0
TARGET_PEAK_BYTES = 2 * GIB
TARGET_INCREMENTAL_RATIO = 1.5
TARGET_FIXED_SECONDS = 30.0
#: One-hour runs are repeated this many times; the median is reported.
REPEATS = 3
#: Above this many events the S3 server keeps bodies on disk (``--s3-store auto``): ~1.5 GB of
#: objects, which moto would otherwise hold in memory beside the pipeline.
DISK_STORE_EVENTS = 15_000_000
#: Rough disk use per event (measured 2026-12-03 at 1M events): gzip objects (canonical /
#: mixed shapes) and the warehouse plus its analysts' copy.
OBJECT_BYTES_PER_EVENT = {"canonical": 100, "mixed": 155}
WAREHOUSE_BYTES_PER_EVENT = 450


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="valid events to generate")
    parser.add_argument("--month", default="2026-10", help="UTC month, YYYY-MM")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--shapes",
        choices=("mixed", "canonical"),
        default="mixed",
        help="the month's wire shapes: mixed (producers' own, as the demo) or canonical only",
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument(
        "--skip-generate",
        action="store_true",
        help="upload the objects kept by an earlier run (same month/events/seed) instead",
    )
    parser.add_argument("--no-record", action="store_true", help="do not append BENCHMARKS.md")
    parser.add_argument(
        "--hot-hours",
        type=int,
        default=0,
        help="hours holding --hot-hour-events events each in ONE .jsonl.gz object (of --events)",
    )
    parser.add_argument("--hot-hour-events", type=int, default=0, help="valid events per hot hour")
    parser.add_argument(
        "--s3-store",
        choices=("auto", "memory", "disk"),
        default="auto",
        help="where the S3 server keeps the bodies: memory (moto's default below 5 MiB an "
        "object), disk (files in the work dir), auto: disk above "
        f"{DISK_STORE_EVENTS:,} events",
    )
    parser.add_argument(
        "--no-keep",
        action="store_true",
        help="keep no copy of the generated objects in the work dir (no later --skip-generate)",
    )
    parser.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default="duckdb",
        help="spark: the same month with TOKENBILL_ENGINE=spark (the Parquet lake and dbt's "
        "spark target, a local Spark at TOKENBILL_SPARK_MASTER); only the backfill is "
        "measured, recorded as a Spark section of its own",
    )
    args = parser.parse_args(argv)
    if args.s3_store == "auto":
        args.s3_store = "disk" if args.events > DISK_STORE_EVENTS else "memory"
    if args.hot_hours and args.hot_hours * args.hot_hour_events > args.events:
        parser.error("--hot-hours x --hot-hour-events must not exceed --events")
    if args.hot_hours and not args.hot_hour_events:
        parser.error("--hot-hours needs --hot-hour-events")

    _quiet()
    os.environ["TOKENBILL_ENGINE"] = args.engine
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    short = disk_shortfall(args, workdir)
    if short:
        print(short, file=sys.stderr)
        return 2
    start = datetime.strptime(args.month, "%Y-%m").replace(tzinfo=UTC)
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    results: dict = {"args": vars(args) | {"workdir": str(workdir)}, "machine": machine()}
    print(
        f"tokenbill bench: {args.events:,} events, {args.month}, seed {args.seed}, "
        f"{args.shapes} shapes"
        + (
            f", {args.hot_hours} hot hours of {args.hot_hour_events:,} events (one object each)"
            if args.hot_hours
            else ""
        )
    )
    print(f"  work dir {workdir}; dbt/Dagster output in {workdir / 'runs.log'}")

    with s3_child(args, workdir) as s3:
        keys = ("seconds", "mode", "objects", "bytes", "store", "rss_server")
        results["generate"] = {k: s3[k] for k in (*keys, "maxrss_self", "maxrss_renderer")}
        print(
            f"  {s3['mode']} {s3['objects']:,} objects ({s3['bytes'] / 1e6:,.1f} MB) "
            f"in {s3['seconds']:.1f}s = {args.events / s3['seconds']:,.0f} events/s "
            "(not part of the pipeline figure)\n"
            f"  generator peak RSS: {_mb(s3['maxrss_self'])} (S3 server + uploads), "
            f"{_mb(s3['maxrss_renderer'])} (largest rendering process); S3 server "
            f"({s3['store']} store) {_mb(s3['rss_server'])} holding the month"
        )
        manifest = s3["manifest"]
        with open(workdir / "runs.log", "w") as log:
            results["backfill"] = backfill(
                workdir / "month", start, end, manifest, log, s3_pid=s3["pid"]
            )
            print_backfill(results["backfill"], args.events)
            if args.engine == "spark":  # the rest measures DuckDB alone
                results["machine"]["loadavg_at_end"] = os.getloadavg()
                results["spark_master"] = os.environ.get(
                    "TOKENBILL_SPARK_MASTER", SETTINGS["TOKENBILL_SPARK_MASTER"][0]
                )
                (workdir / f"results-{args.events}-{args.shapes}-spark.json").write_text(
                    json.dumps(results, indent=2, default=str)
                )
                if not args.no_record:
                    record_spark(results)
                    print(f"  appended to {BENCHMARKS_MD}")
                return 0 if all(r["success"] for r in results["backfill"]["runs"]) else 1
            results["ingestion_split"] = instrumented_ingestion(workdir, start, end)
            print_split(results["ingestion_split"])
            results["reference"] = reference(start, end)
            print_reference(results["reference"], results["backfill"]["seconds"])
            results["incremental"] = incremental(workdir, start, log)
            print_incremental(results["incremental"])
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    hot = f"-hot{args.hot_hours}x{args.hot_hour_events}" if args.hot_hours else ""
    (workdir / f"results-{args.events}-{args.shapes}{hot}.json").write_text(
        json.dumps(results, indent=2)
    )
    if not args.no_record:
        record(results)
        print(f"  appended to {BENCHMARKS_MD}")
    return 0


def disk_shortfall(args, workdir: Path) -> str | None:
    """What is missing on the work dir's disk for this run, with what to do; None if it fits.

    Counted: the kept copy of the objects (unless --no-keep or --skip-generate), the S3
    server's store (--s3-store disk) and the warehouse with its analysts' copy; what an
    earlier run left in the work dir is reused or replaced, so it counts as free."""
    objects = args.events * OBJECT_BYTES_PER_EVENT[args.shapes]
    parts = {
        "the kept objects": 0 if args.no_keep or args.skip_generate else objects,
        "the S3 server's disk store": objects if args.s3_store == "disk" else 0,
        "the warehouse and its analysts' copy": args.events * WAREHOUSE_BYTES_PER_EVENT,
    }
    need = int(sum(parts.values()) * 1.1)
    free = shutil.disk_usage(workdir).free + _du(workdir)
    if need <= free:
        return None
    what = ", ".join(f"{name} ~{n / 1e9:,.1f} GB" for name, n in parts.items() if n)
    return (
        f"bench: {args.events:,} events need ~{need / 1e9:,.1f} GB free on the disk of "
        f"{workdir} ({what}, +10%), which has {free / 1e9:,.1f} GB: free some space, give "
        "--workdir on a larger disk"
        + ("" if args.no_keep else ", or --no-keep (no copy of the objects)")
    )


def _du(directory: Path) -> int:
    total = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


def _quiet() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for key, value in (
        ("DO_NOT_TRACK", "1"),
        ("DAGSTER_DISABLE_TELEMETRY", "1"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)
    os.environ["TOKENBILL_S3_BUCKET"] = BUCKET
    os.environ["TOKENBILL_S3_PREFIX"] = PREFIX


# ---------------------------------------------------------------------------------------------
# The machine and the process


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        found = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem_kib = int(found.group(1)) if found else 0
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024**2, 1),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def vm_rss(pid: int | str = "self") -> int:
    """A process's resident set size now, in bytes (0 once it has gone)."""
    try:
        found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return 0
    return int(found.group(1)) * 1024 if found else 0


def descendants(pid: int) -> list[int]:
    """Every live descendant of a process (children of all its threads, recursively)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    found.extend(descendants(int(child)))
    return found


def cpu_of(pid: int) -> float:
    """A live process's user+system CPU seconds so far (/proc/<pid>/stat; 0 once gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # fields[0] is the state (field 3): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def max_rss(who: int = resource.RUSAGE_SELF) -> int:
    """Peak resident set size (Linux reports KiB), in bytes."""
    return resource.getrusage(who).ru_maxrss * 1024


class RssSampler:
    """Samples, in a thread, this process's VmRSS and that of the whole run: this process plus
    its descendants (the dbt processes), except ``exclude`` (the S3 server's process tree, which
    stands for S3 and is not part of the pipeline). ``peak`` and ``peak_tree`` are the highest
    seen while it ran."""

    def __init__(self, interval: float = 0.1, exclude: int | None = None):
        self.interval = interval
        #: {pid: CPU seconds last seen} of every descendant seen (dbt, its Spark JVM): a
        #: JVM nobody waits for is missing from RUSAGE_CHILDREN; this sums them all (each
        #: to within one interval of its exit)
        self.cpu_descendants: dict[int, float] = {}
        self.exclude = {exclude, *descendants(exclude)} if exclude else set()
        #: the S3 server's highest RSS (reported, not counted)
        self.peak_excluded = sum(vm_rss(p) for p in self.exclude)
        self.peak = self.start = vm_rss()
        self.peak_tree = self.tree()
        #: (seconds after start, this process, the run) when the run's RSS was highest
        self.at_peak = (0.0, self.start, self.peak_tree)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tree(self) -> int:
        me = os.getpid()
        pids = [p for p in descendants(me) if p not in self.exclude]
        for pid in pids:
            cpu = cpu_of(pid)
            if cpu:
                self.cpu_descendants[pid] = max(cpu, self.cpu_descendants.get(pid, 0.0))
        return vm_rss() + sum(vm_rss(p) for p in pids)

    def _run(self) -> None:
        began = time.monotonic()
        while not self._stop.wait(self.interval):
            me, tree = vm_rss(), self.tree()
            self.peak = max(self.peak, me)
            excluded = sum(vm_rss(p) for p in self.exclude)
            self.peak_excluded = max(self.peak_excluded, excluded)
            if tree > self.peak_tree:
                self.peak_tree = tree
                self.at_peak = (time.monotonic() - began, me, tree)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, vm_rss())


def cpu_seconds() -> tuple[float, float]:
    """(this process, its waited-for children such as dbt) user+system CPU seconds."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


# ---------------------------------------------------------------------------------------------
# S3 and the generated month, in a child process


@contextlib.contextmanager
def s3_child(args, workdir: Path) -> Iterator[dict]:
    hot = f"-hot{args.hot_hours}x{args.hot_hour_events}" if args.hot_hours else ""
    cache = workdir / "data" / f"{args.month}-{args.events}-s{args.seed}-{args.shapes}{hot}"
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "bench.s3",
        f"--month={args.month}",
        f"--events={args.events}",
        f"--seed={args.seed}",
        f"--shapes={args.shapes}",
        f"--bucket={BUCKET}",
        f"--prefix={PREFIX}",
        f"--cache={cache}",
        *(["--skip-generate"] if args.skip_generate else []),
        f"--hot-hours={args.hot_hours}",
        f"--hot-hour-events={args.hot_hour_events}",
        f"--store={args.s3_store}",
        f"--store-dir={workdir / 's3'}",
        *(["--no-keep"] if args.no_keep else []),
    ]
    child = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        line = child.stdout.readline()
        if not line:
            raise SystemExit(f"the S3 child process failed (exit {child.wait()})")
        info = json.loads(line)
        info["pid"] = child.pid
        os.environ["AWS_ENDPOINT_URL_S3"] = info["endpoint"]
        yield info
    finally:
        with contextlib.suppress(BrokenPipeError):
            child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# ---------------------------------------------------------------------------------------------
# Dagster: instances, runs, and what their event logs say


def fresh_instance(directory: Path):
    """A new, empty DAGSTER_HOME with the project's dagster.yaml, and its instance."""
    from dagster import DagsterInstance

    shutil.rmtree(directory, ignore_errors=True)
    home = directory / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.from_config(str(home))


def warehouse_defs(directory: Path):
    """The code location on a fresh warehouse under ``directory``: the DuckDB file, or with
    ``TOKENBILL_ENGINE=spark`` the lake and the Spark warehouse beside it."""
    from orchestration.definitions import build_defs

    os.environ["TOKENBILL_LAKE_ROOT"] = str(directory / "lake")
    os.environ["TOKENBILL_SPARK_WAREHOUSE"] = str(directory / "spark-warehouse")

    return build_defs(
        bucket=BUCKET,
        prefix=PREFIX,
        warehouse_path=str(directory / "wh.duckdb"),
        analyst_dir=str(directory / "analyst"),
    )


@dataclass
class EventWrites:
    """Times every event-log write of an instance (wraps its storage's ``store_event``)."""

    seconds: dict = field(default_factory=lambda: defaultdict(float))
    counts: Counter = field(default_factory=Counter)

    def install(self, instance) -> None:
        storage = instance.event_log_storage
        original, original_batch = storage.store_event, storage.store_event_batch

        def store_event(event):
            began = time.perf_counter()
            try:
                return original(event)
            finally:
                self._add(event, time.perf_counter() - began)

        def store_event_batch(events):
            began = time.perf_counter()
            try:
                return original_batch(events)
            finally:
                share = (time.perf_counter() - began) / max(len(events), 1)
                for event in events:
                    self._add(event, share)

        storage.store_event = store_event
        storage.store_event_batch = store_event_batch

    def _add(self, event, seconds: float) -> None:
        kind = event.dagster_event.event_type_value if event.dagster_event else "LOG_MESSAGE"
        # Planned events are written while the run is created, before any step starts.
        step = "(run: planned)" if kind.endswith("_PLANNED") else event.step_key or "(run)"
        key = (event.run_id, step, kind)
        self.seconds[key] += seconds
        self.counts[key] += 1

    def for_run(self, run_id: str) -> dict:
        """{step or "(run)": {"events": n, "seconds": s, "by_type": {type: n}}}."""
        out: dict = {}
        for (rid, step, kind), n in self.counts.items():
            if rid != run_id:
                continue
            slot = out.setdefault(step, {"events": 0, "seconds": 0.0, "by_type": {}})
            slot["events"] += n
            slot["seconds"] += self.seconds[(rid, step, kind)]
            slot["by_type"][kind] = slot["by_type"].get(kind, 0) + n
        return out


def timed_run(defs, instance, job: str, first: str | None, last: str | None, writes, log):
    """One run; its wall time, its steps from the event log, its event-log writes."""
    from orchestration.runner import run_job_range

    began = time.perf_counter()
    with contextlib.redirect_stdout(log):
        result = run_job_range(
            defs,
            job,
            first,
            last,
            instance,
            # On Spark a failed run (a model not ported yet) is reported, and the next runs go
            raise_on_error=os.environ.get("TOKENBILL_ENGINE") != "spark",
            log_level="WARNING",
        )
    wall = time.perf_counter() - began
    steps: dict = {}
    landed = None
    nodes: dict[str, float] = {}
    for entry in instance.all_logs(result.run_id):
        kind = entry.dagster_event.event_type_value if entry.dagster_event else None
        if kind in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
            steps.setdefault(entry.step_key, {})[kind] = entry.timestamp
        elif kind in ("ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION"):
            _node_duration(entry.dagster_event, nodes)
        elif kind is None and "landed" in (entry.user_message or ""):
            landed = (entry.step_key, entry.timestamp, entry.user_message)
    step_seconds = {
        key: marks.get("STEP_SUCCESS", marks.get("STEP_FAILURE", 0.0)) - marks["STEP_START"]
        for key, marks in steps.items()
        if "STEP_START" in marks
    }
    run = {
        "job": job,
        "span": f"{first}..{last}" if first else "(unpartitioned)",
        "run_id": result.run_id,
        "success": result.success,
        "wall": wall,
        "steps": step_seconds,
        "overhead": wall - sum(step_seconds.values()),
        "writes": writes.for_run(result.run_id) if writes else {},
        "dbt_nodes": nodes,
    }
    if landed:
        key, at, message = landed
        run["landed"] = {
            "message": message,
            "ingest_seconds": at - steps[key]["STEP_START"],
            "after_landing_seconds": steps[key].get("STEP_SUCCESS", at) - at,
        }
    return run


def _node_duration(event, nodes: dict[str, float]) -> None:
    """dagster-dbt puts each dbt node's ``unique_id`` and ``Execution Duration`` (seconds, from
    dbt's node timing) on its materialization or check evaluation. A ranged run repeats them
    once per partition: a node counts once."""
    data = event.event_specific_data
    metadata = getattr(getattr(data, "materialization", data), "metadata", None) or {}
    unique_id, duration = metadata.get("unique_id"), metadata.get("Execution Duration")
    if unique_id is not None and duration is not None:
        nodes[unique_id.value] = max(nodes.get(unique_id.value, 0.0), float(duration.value))


_AGGREGATES = "dbt aggregates (staging, hourly/daily/monthly marts)"
_WALLETS = "wallets (dbt + ledger asset)"
_INVOICES = "invoices (dbt + export asset)"
_CATALOGS = "catalogs (price table, plans, wallets config)"
#: dbt model folders, and the Python assets beside them, as the stages the issue names.
_STAGE_OF_FOLDER = {
    "staging": _AGGREGATES,
    "marts": _AGGREGATES,
    "rating": "rating (dbt)",
    "wallets": _WALLETS,
    "invoicing": _INVOICES,
    "catalog": _CATALOGS,
    "agent_runs": "agent runs, request costs, retry waste (dbt)",
}
_STAGE_OF_STEP = {
    "billing__wallet_ledger": _WALLETS,
    "invoice_export": _INVOICES,
    "pricing_catalog": _CATALOGS,
    "wallet_catalog": _CATALOGS,
    "analyst_snapshot": "analysts' copy (published at the end of each run)",
}
_DBT_TESTS = "dbt data tests (asset checks, all grains)"
_INGESTION = "S3 fetch + parse + validation + raw landing (raw_usage_events step)"


def stages(b: dict) -> dict[str, float]:
    """The backfill's wall seconds by stage, adding up to the backfill.

    dbt models and tests are timed by dbt itself (one thread, so they add up); a dbt step's
    remainder (process start, manifest load, adapter, dagster-dbt's event handling) and every
    run's own overhead go to the last two lines.
    """
    from orchestration.defs.dbt.project import tokenbill_dbt_project

    manifest = json.loads(tokenbill_dbt_project().manifest_path.read_text())
    nodes = manifest["nodes"].items()
    folder = {uid: node["fqn"][1] for uid, node in nodes if len(node["fqn"]) > 2}
    out: dict[str, float] = defaultdict(float)
    dbt_steps = dbt_nodes = 0.0
    for run in b["runs"]:
        for step, secs in run["steps"].items():
            if step == "raw_usage_events":
                out[_INGESTION] += secs
            elif step in _STAGE_OF_STEP:
                out[_STAGE_OF_STEP[step]] += secs
            else:
                dbt_steps += secs
        for uid, secs in run["dbt_nodes"].items():
            stage = (
                _DBT_TESTS
                if uid.startswith("test.")
                else _STAGE_OF_FOLDER.get(folder.get(uid, ""), "other dbt nodes")
            )
            out[stage] += secs
            dbt_nodes += secs
    out["dbt processes (start, manifest, adapter, dagster-dbt events)"] = dbt_steps - dbt_nodes
    out["Dagster runs (creation, planned events, start/end)"] = sum(
        run["overhead"] for run in b["runs"]
    )
    return dict(out)


def backfill(
    directory: Path, start: datetime, end: datetime, manifest: dict, log, s3_pid: int
) -> dict:
    """The demo's month: catalog, then hours, days, month; on a fresh warehouse and instance."""
    from orchestration.runner import CATALOG_JOB, plan_period

    instance = fresh_instance(directory)
    defs = warehouse_defs(directory)
    writes = EventWrites()
    writes.install(instance)
    cpu0 = cpu_seconds()
    runs = []
    with RssSampler(exclude=s3_pid) as rss:
        began = time.perf_counter()
        for job, first, last in [(CATALOG_JOB, None, None), *plan_period(start, end)]:
            run = timed_run(defs, instance, job, first, last, writes, log)
            runs.append(run)
            print(
                f"  run {run['run_id'][:8]} {job:<18} {run['span']:<34} "
                f"{'ok' if run['success'] else 'FAILED'} in {run['wall']:.1f}s"
            )
        seconds = time.perf_counter() - began
    cpu1 = cpu_seconds()
    out = {
        "seconds": seconds,
        "runs": runs,
        "rss_start": rss.start,
        "rss_peak_backfill": rss.peak,
        "rss_peak_run": rss.peak_tree,
        "rss_peak_s3": rss.peak_excluded,
        # (seconds into the backfill, this process, the run) when the run's RSS peaked
        "rss_at_run_peak": rss.at_peak,
        "maxrss_self": max_rss(),
        "maxrss_children": max_rss(resource.RUSAGE_CHILDREN),
        "cpu_self": cpu1[0] - cpu0[0],
        "cpu_children": cpu1[1] - cpu0[1],
        "cpu_descendants_sampled": sum(rss.cpu_descendants.values()),
        "event_writes": sum(writes.counts.values()),
        "event_write_seconds": sum(writes.seconds.values()),
        "event_writes_by_type": dict(
            sorted(_sum_by(writes.counts, lambda key: key[2]).items(), key=lambda kv: -kv[1])
        ),
        "checks": check_against_manifest(directory, start, end, manifest),
    }
    out["stages"] = stages(out)
    instance.dispose()
    return out


def check_spark_against_manifest(
    directory: Path, start: datetime, end: datetime, manifest: dict
) -> str:
    """The lake's audit against what the generator wrote (the marts are Spark's: counted
    with one Spark session on the runs' tables)."""
    from orchestration.defs.ingestion.lake import read_lake_table
    from orchestration.warehouse import SparkWarehouse, spark_session

    try:
        audit = read_lake_table(directory / "lake", "raw.ingestion_audit").to_pylist()
    except Exception as exc:  # nothing landed
        return f"no lake audit: {exc}"
    hours = [
        a
        for a in audit
        if start.replace(tzinfo=None) <= a["partition_hour"] < end.replace(tzinfo=None)
    ]
    want = manifest["lines"]
    pairs = {
        "valid": (sum(a["valid_count"] for a in hours), want["valid_unique"]),
        "duplicates": (sum(a["duplicate_count"] for a in hours), want["duplicate"]),
        "quarantined": (sum(a["quarantined_count"] for a in hours), want["malformed"]),
    }
    try:
        with spark_session("local[2]", str(directory / "spark-warehouse")) as session:
            ((tokens_in, tokens_out),) = SparkWarehouse(session).rows(
                "select sum(input_tokens), sum(output_tokens) from marts.fct_token_usage_hourly "
                "where usage_hour >= ? and usage_hour < ?",
                [start.replace(tzinfo=None), end.replace(tzinfo=None)],
            )
        pairs["input_tokens"] = (tokens_in, manifest["tokens"]["input_tokens"])
        pairs["output_tokens"] = (tokens_out, manifest["tokens"]["output_tokens"])
    except Exception as exc:
        return f"lake counts checked; marts not readable on Spark: {str(exc).splitlines()[0]}"
    diffs = [f"{k} {got} != {exp}" for k, (got, exp) in pairs.items() if int(got or 0) != exp]
    return "matches the generator's manifest" if not diffs else "MISMATCH: " + "; ".join(diffs)


def _sum_by(counter: Counter, key: Callable) -> dict:
    out: Counter = Counter()
    for k, n in counter.items():
        out[key(k)] += n
    return dict(out)


def check_against_manifest(directory: Path, start: datetime, end: datetime, manifest: dict) -> str:
    """Did the benchmarked run do the job? (counts against what the generator wrote)"""
    import duckdb

    if os.environ.get("TOKENBILL_ENGINE") == "spark":
        return check_spark_against_manifest(directory, start, end, manifest)
    with duckdb.connect(str(directory / "wh.duckdb"), read_only=True) as con:
        valid, dups, quarantined, lines = con.execute(
            "select sum(valid_count), sum(duplicate_count), sum(quarantined_count), "
            "sum(lines_read) from raw.ingestion_audit "
            "where partition_hour >= ? and partition_hour < ?",
            [start.replace(tzinfo=None), end.replace(tzinfo=None)],
        ).fetchone()
        tokens = con.execute(
            "select sum(input_tokens), sum(output_tokens) from marts.fct_token_usage_monthly "
            "where usage_month = ?",
            [start.date()],
        ).fetchone()
    want = manifest["lines"]
    pairs = {
        "valid": (valid, want["valid_unique"]),
        "duplicates": (dups, want["duplicate"]),
        "quarantined": (quarantined, want["malformed"]),
        "input_tokens": (tokens[0], manifest["tokens"]["input_tokens"]),
        "output_tokens": (tokens[1], manifest["tokens"]["output_tokens"]),
    }
    diffs = [f"{k} {got} != {exp}" for k, (got, exp) in pairs.items() if int(got or 0) != exp]
    return "matches the generator's manifest" if not diffs else "MISMATCH: " + "; ".join(diffs)


# ---------------------------------------------------------------------------------------------
# Ingestion split: the asset's own functions, called directly on the same objects


def _hour_prefixes(start: datetime, end: datetime):
    from orchestration.defs.resources import S3UsageBucket

    s3 = S3UsageBucket(bucket=BUCKET, prefix=PREFIX)
    hours, hour = [], start
    while hour < end:
        hours.append((hour, s3.hour_prefix(hour.strftime("%Y-%m-%d"), hour.hour)))
        hour += timedelta(hours=1)
    return s3, hours


def instrumented_ingestion(workdir: Path, start: datetime, end: datetime) -> dict:
    """Where raw_usage_events' time goes, measured outside Dagster on a scratch warehouse.

    Two passes: fetch only (``fetch_hours`` drained: listing + GETs, 16 hours in flight), then
    the asset's loop (``batches`` -> ``route_hours`` -> ``land_batch``) with ``route_hours``'
    helpers wrapped by timers (module attributes swapped for this pass only).
    """
    import duckdb

    import orchestration.defs.ingestion.parsing as parsing
    from orchestration.defs.ingestion.assets import (
        BATCH_BYTES,
        LANDING_MEMORY_LIMIT,
        PREFETCH_BYTES,
    )
    from orchestration.defs.ingestion.landing import ensure_raw_schema, land_batch

    s3, prefixes = _hour_prefixes(start, end)
    began = time.perf_counter()
    size = sum(
        h.size
        for h in parsing.fetch_hours(s3.client(), BUCKET, prefixes, ahead_bytes=PREFETCH_BYTES)
    )
    fetch_only = time.perf_counter() - began

    names = {
        "split_lines": "split lines",
        "map_lines": "producer shapes: detection + mapping (DuckDB)",
        "extract_wire_fields": "JSON extraction (DuckDB)",
        "validate_wire_events": "contract validation (pandera/polars)",
        "_deduplicate": "deduplication",
    }
    scratch = workdir / "split.duckdb"
    scratch.unlink(missing_ok=True)
    try:
        wait = route = land = 0.0
        n_batches = 0
        began = time.perf_counter()
        with (
            timed_functions(parsing, names) as timers,
            duckdb.connect(str(scratch), config={"memory_limit": LANDING_MEMORY_LIMIT}) as con,
        ):
            ensure_raw_schema(con)
            fetched = parsing.fetch_hours(s3.client(), BUCKET, prefixes, ahead_bytes=PREFETCH_BYTES)
            it = parsing.batches(fetched, BATCH_BYTES)
            while True:
                t0 = time.perf_counter()
                batch_inputs = next(it, None)
                t1 = time.perf_counter()
                wait += t1 - t0
                if batch_inputs is None:
                    break
                batch = parsing.route_hours(batch_inputs)
                t2 = time.perf_counter()
                land_batch(con, batch)
                t3 = time.perf_counter()
                route, land = route + t2 - t1, land + t3 - t2
                n_batches += 1
        total = time.perf_counter() - began
    finally:
        scratch.unlink(missing_ok=True)
    parts = {label: timers[name] for name, label in names.items()}
    parts["joins, concat, quarantine rows (rest of route_hours)"] = route - sum(timers.values())
    return {
        "bytes": size,
        "fetch_only": fetch_only,
        "total": total,
        "batches": n_batches,
        "waiting_for_s3": wait,
        "route_hours": route,
        "route_parts": parts,
        "land_batch": land,
    }


# ---------------------------------------------------------------------------------------------
# The bare reference: boto3 + DuckDB, hourly token sums per customer and model, nothing else

_REFERENCE_STRUCT = (
    '{"customer_id": "VARCHAR", "model": "VARCHAR", '
    '"input_tokens": "VARCHAR", "output_tokens": "VARCHAR"}'
)
_REFERENCE_SQL = f"""
select hour, j.customer_id, j.model,
       sum(try_cast(j.input_tokens as bigint))::bigint as input_tokens,
       sum(try_cast(j.output_tokens as bigint))::bigint as output_tokens,
       count(*)::bigint as events
from (
    select hour, from_json(raw_line, '{_REFERENCE_STRUCT}') as j
    from lines
    where json_valid(raw_line) and starts_with(ltrim(raw_line), '{{')
)
group by all
"""
#: Decoded text per aggregation pass of the reference, as the pipeline batches its routing.
_REFERENCE_BATCH_BYTES = 128 * 1024 * 1024


def reference(start: datetime, end: datetime) -> dict:
    """The same objects, read with the same tools and nothing else: boto3 GETs and gunzip in
    16 threads (a bounded number in flight), lines split by polars, DuckDB parsing each line
    once (``from_json`` of four fields, both cores) and summing tokens per hour, customer and
    model; Parquet objects through polars. No validation, no deduplication, no warehouse."""
    import boto3
    import duckdb
    import polars as pl
    import pyarrow as pa

    client = boto3.client("s3")
    began = time.perf_counter()
    keys = []
    day = start
    paginator = client.get_paginator("list_objects_v2")
    while day < end:
        for page in paginator.paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/dt={day:%Y-%m-%d}/"):
            keys += [item["Key"] for item in page.get("Contents", [])]
        day += timedelta(days=1)

    def get(key: str):
        hour = datetime.strptime(
            re.search(r"dt=(\d{4}-\d\d-\d\d)/hour=(\d\d)", key).expand(r"\1 \2"),
            "%Y-%m-%d %H",
        )
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        try:
            if key.endswith(".jsonl.gz"):
                return hour, gzip.decompress(body).decode(), None
            if key.endswith(".jsonl"):
                return hour, body.decode(), None
            if key.endswith(".parquet"):
                columns = ["customer_id", "model", "input_tokens", "output_tokens"]
                return hour, None, pl.read_parquet(io.BytesIO(body), columns=columns)
        except Exception:  # the corrupt objects: a reference skips them
            pass
        return hour, None, None

    con = duckdb.connect()
    partials = []

    def aggregate(hours: list[datetime], texts: list[str]) -> None:
        frame = pl.DataFrame({"hour": hours, "text": texts}).select(
            "hour", pl.col("text").str.split("\n").alias("raw_line")
        )
        table = frame.explode("raw_line").to_arrow()
        con.register("lines", pa.Table.from_batches(table.to_batches(max_chunksize=50_000)))
        partials.append(con.sql(_REFERENCE_SQL).pl())
        con.unregister("lines")

    hours, texts, size = [], [], 0
    with ThreadPoolExecutor(max_workers=16) as pool:
        pending: deque = deque()
        for key in [*keys, None]:
            if key is not None:
                pending.append(pool.submit(get, key))
            while pending and (len(pending) >= 32 or key is None):
                hour, text, parquet = pending.popleft().result()
                if parquet is not None:
                    partials.append(
                        parquet.with_columns(hour=pl.lit(hour))
                        .group_by("hour", "customer_id", "model")
                        .agg(
                            pl.col("input_tokens").sum(),
                            pl.col("output_tokens").sum(),
                            pl.len().cast(pl.Int64).alias("events"),
                        )
                    )
                elif text is not None:
                    hours.append(hour)
                    texts.append(text)
                    size += len(text)
                if size >= _REFERENCE_BATCH_BYTES:
                    aggregate(hours, texts)
                    hours, texts, size = [], [], 0
    if texts:
        aggregate(hours, texts)
    result = (
        pl.concat(
            [
                p.select("hour", "customer_id", "model", pl.col(pl.Int64, pl.UInt32).cast(pl.Int64))
                for p in partials
            ]
        )
        .group_by("hour", "customer_id", "model")
        .agg(pl.col("input_tokens", "output_tokens", "events").sum())
    )
    seconds = time.perf_counter() - began
    con.close()
    return {
        "seconds": seconds,
        "objects": len(keys),
        "rows": result.height,
        "lines_summed": int(result["events"].sum()),
        "input_tokens": int(result["input_tokens"].sum()),
    }


# ---------------------------------------------------------------------------------------------
# Incremental hourly runs


def incremental(workdir: Path, start: datetime, log) -> dict:
    """One hourly run (day 2, 12:00) after one day of history and after the whole month; and
    one on an hour with no objects (the fixed cost of a run)."""
    from orchestration.defs.partitions import hourly_partitions
    from orchestration.runner import CATALOG_JOB, plan_period

    def key(moment: datetime) -> str:
        return hourly_partitions.get_partition_key_for_timestamp(moment.timestamp())

    hour = key(start + timedelta(days=1, hours=12))
    empty = key(start - timedelta(hours=12))  # the month before: no objects there

    day_dir = workdir / "day1"
    instance = fresh_instance(day_dir)
    defs = warehouse_defs(day_dir)
    began = time.perf_counter()
    for job, first, last in [
        (CATALOG_JOB, None, None),
        *plan_period(start, start + timedelta(days=1))[:2],  # hours and the day
    ]:
        timed_run(defs, instance, job, first, last, None, log)
    day_setup = time.perf_counter() - began
    after_day = [timed_run(defs, instance, "hourly_usage_job", hour, hour, None, log)]
    after_day += [
        timed_run(defs, instance, "hourly_usage_job", hour, hour, None, log)
        for _ in range(REPEATS - 1)
    ]
    fixed = [
        timed_run(defs, instance, "hourly_usage_job", empty, empty, None, log)
        for _ in range(REPEATS)
    ]
    instance.dispose()

    from dagster import DagsterInstance

    month_dir = workdir / "month"
    instance = DagsterInstance.from_config(str(month_dir / "dagster_home"))
    defs = warehouse_defs(month_dir)
    after_month = [
        timed_run(defs, instance, "hourly_usage_job", hour, hour, None, log) for _ in range(REPEATS)
    ]
    instance.dispose()

    def summary(runs: list[dict]) -> dict:
        median = statistics.median(r["wall"] for r in runs)
        mid = min(runs, key=lambda r: abs(r["wall"] - median))
        return {
            "median": median,
            "all": [r["wall"] for r in runs],
            "steps": mid["steps"],
            "overhead": mid["overhead"],
        }

    return {
        "hour": hour,
        "empty_hour": empty,
        "day_setup_seconds": day_setup,
        "after_day": summary(after_day),
        "after_month": summary(after_month),
        "fixed": summary(fixed),
    }


# ---------------------------------------------------------------------------------------------
# Printing


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def print_backfill(b: dict, events: int) -> None:
    print(
        f"  backfill: {b['seconds']:.1f}s end to end = {events / b['seconds']:,.0f} events/s; "
        f"{b['checks']}"
    )
    for run in b["runs"]:
        print(
            f"    {run['job']:<18} wall {run['wall']:7.1f}s  run overhead {run['overhead']:6.1f}s"
        )
        for step, secs in run["steps"].items():
            w = run["writes"].get(step, {"events": 0, "seconds": 0.0})
            print(
                f"      step {step:<28} {secs:7.1f}s  ({w['events']:,} event writes, "
                f"{w['seconds']:.1f}s)"
            )
        for bucket in ("(run: planned)", "(run)"):
            w = run["writes"].get(bucket, {"events": 0, "seconds": 0.0})
            print(f"      {bucket:<33} {w['events']:,} event writes ({w['seconds']:.1f}s)")
        if "landed" in run:
            landed = run["landed"]
            print(
                f"      raw_usage_events: start->'landed' {landed['ingest_seconds']:.1f}s, "
                f"'landed'->success {landed['after_landing_seconds']:.1f}s"
            )
    print("  seconds by stage (adding up to the backfill):")
    for stage, secs in b["stages"].items():
        print(f"    {stage:<72} {secs:7.1f}s ({100 * secs / b['seconds']:.0f}%)")
    n, s = b["event_writes"], b["event_write_seconds"]
    print(
        f"  event-log writes: {n:,} in {s:.1f}s ({1000 * s / max(n, 1):.1f} ms each, "
        f"{100 * s / b['seconds']:.0f}% of the backfill); by type: "
        + ", ".join(f"{k} {v:,}" for k, v in list(b["event_writes_by_type"].items())[:6])
    )
    print(
        f"  memory: peak RSS of the run (this process + dbt) {_mb(b['rss_peak_run'])} "
        f"at {b['rss_at_run_peak'][0]:.0f}s (this process then "
        f"{_mb(b['rss_at_run_peak'][1])}); "
        f"this process {_mb(b['rss_peak_backfill'])} (from {_mb(b['rss_start'])}); "
        f"ru_maxrss self {_mb(b['maxrss_self'])}, largest child {_mb(b['maxrss_children'])} "
        "(fork-inflated: a child counts its parent's pages until it execs); "
        f"the S3 server (not counted) {_mb(b.get('rss_peak_s3', 0))}"
    )
    print(
        f"  CPU: this process {b['cpu_self']:.1f}s, children (dbt) {b['cpu_children']:.1f}s, "
        f"every descendant sampled (dbt, Spark JVMs) {b.get('cpu_descendants_sampled', 0):.1f}s"
    )


def print_split(s: dict) -> None:
    print(
        f"  ingestion split (instrumented pass outside Dagster, same objects, "
        f"{s['bytes'] / 1e6:,.1f} MB):"
    )
    print(f"    fetch only (list + GET + gunzip, as the asset prefetches) {s['fetch_only']:7.1f}s")
    print(f"    full pass, one thing at a time: {s['total']:.1f}s in {s['batches']} batches")
    print(f"      waiting for S3 (not hidden by prefetch)   {s['waiting_for_s3']:7.1f}s")
    print(f"      route_hours                               {s['route_hours']:7.1f}s")
    for label, secs in s["route_parts"].items():
        print(f"        {label:<42}{secs:7.1f}s")
    print(f"      land_batch (DuckDB delete + insert)       {s['land_batch']:7.1f}s")


def print_reference(r: dict, pipeline: float) -> None:
    print(
        f"  reference (boto3 + DuckDB/polars, hourly sums per customer/model): "
        f"{r['seconds']:.1f}s over {r['objects']:,} objects, {r['lines_summed']:,} lines; "
        f"pipeline / reference = {pipeline / r['seconds']:.1f}x"
    )


def print_incremental(inc: dict) -> None:
    a, m, f = inc["after_day"], inc["after_month"], inc["fixed"]
    print(
        f"  one hourly run ({inc['hour']}, median of {REPEATS}): after a day {a['median']:.1f}s, "
        f"after the month {m['median']:.1f}s, ratio {m['median'] / a['median']:.2f}"
    )
    for name, s in (("after a day", a), ("after the month", m), ("empty hour", f)):
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in s["steps"].items())
        print(f"    {name:<16} {steps}; run overhead {s['overhead']:.1f}s")
    print(f"  fixed overhead of a one-hour run ({inc['empty_hour']}, no data): {f['median']:.1f}s")


# ---------------------------------------------------------------------------------------------
# BENCHMARKS.md

#: The top of BENCHMARKS.md, written when the file is created.
HEADER = Path(__file__).with_name("header.md")


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _hot_title(args: dict) -> str:
    """The hot-hour part of a record's title (the peak RSS row is then the hot-hour peak)."""
    if not args.get("hot_hours"):
        return ""
    return (
        f", {args['hot_hours']} hot hours of {args['hot_hour_events']:,} events "
        "(one .jsonl.gz object each)"
    )


def record(r: dict) -> None:
    b, s, ref, inc, m = (
        r["backfill"],
        r["ingestion_split"],
        r["reference"],
        r["incremental"],
        r["machine"],
    )
    events = r["args"]["events"]
    rate = events / b["seconds"]
    ratio = b["seconds"] / ref["seconds"]
    inc_ratio = inc["after_month"]["median"] / inc["after_day"]["median"]
    peak = b["rss_peak_run"]
    hourly = next(run for run in b["runs"] if run["job"] == "hourly_usage_job")
    landed = hourly.get("landed", {})
    n, w = b["event_writes"], b["event_write_seconds"]
    rows = [
        ("generate (not in pipeline)", f"{r['generate']['seconds']:.1f} s", "", ""),
        ("backfill end to end", f"{b['seconds']:.1f} s", "", ""),
        (
            "events/s",
            f"{rate:,.0f}",
            f">= {TARGET_EVENTS / TARGET_SECONDS:,.0f} (10M < 5 min)",
            _met(rate >= TARGET_EVENTS / TARGET_SECONDS),
        ),
        *(
            (
                f"run {run['job']} (wall / run overhead)",
                f"{run['wall']:.1f} s / {run['overhead']:.1f} s",
                "",
                "",
            )
            for run in b["runs"]
        ),
        *(
            (f"stage: {stage}", f"{secs:.1f} s ({100 * secs / b['seconds']:.0f}%)", "", "")
            for stage, secs in b["stages"].items()
        ),
        *(
            (f"step {step}", f"{secs:.1f} s", "", "")
            for run in b["runs"]
            for step, secs in run["steps"].items()
        ),
        (
            "raw_usage_events: ingest / after landing",
            f"{landed.get('ingest_seconds', 0):.1f} s / "
            f"{landed.get('after_landing_seconds', 0):.1f} s",
            "",
            "",
        ),
        (
            "event-log writes (count, s, ms each)",
            f"{n:,}, {w:.1f} s, {1000 * w / max(n, 1):.1f} ms ({100 * w / b['seconds']:.0f}%)",
            "",
            "",
        ),
        (
            "split: fetch only / wait S3 / route / land",
            f"{s['fetch_only']:.1f} / {s['waiting_for_s3']:.1f} / {s['route_hours']:.1f} / "
            f"{s['land_batch']:.1f} s",
            "",
            "",
        ),
        *((f"split: {label}", f"{secs:.1f} s", "", "") for label, secs in s["route_parts"].items()),
        (
            "peak RSS of the run: this process + dbt (this process alone; largest child, "
            "fork-inflated)",
            f"{_mb(b['rss_peak_run'])} ({_mb(b['rss_peak_backfill'])}; "
            f"{_mb(b['maxrss_children'])})",
            "<= 2 GiB at 10M",
            _met(peak <= TARGET_PEAK_BYTES)
            + ("" if events >= TARGET_EVENTS else f" at {events:,}"),
        ),
        ("reference (boto3 + DuckDB)", f"{ref['seconds']:.1f} s", "", ""),
        (
            "pipeline / reference",
            f"{ratio:.1f}x",
            f"<= {TARGET_RATIO:g}",
            _met(ratio <= TARGET_RATIO),
        ),
        ("hourly run after a day", f"{inc['after_day']['median']:.1f} s", "", ""),
        ("hourly run after the month", f"{inc['after_month']['median']:.1f} s", "", ""),
        (
            "month / day ratio",
            f"{inc_ratio:.2f}",
            f"<= {TARGET_INCREMENTAL_RATIO}",
            _met(inc_ratio <= TARGET_INCREMENTAL_RATIO),
        ),
        (
            "fixed overhead, one-hour run, no data",
            f"{inc['fixed']['median']:.1f} s",
            f"< {TARGET_FIXED_SECONDS:g} s",
            _met(inc["fixed"]["median"] < TARGET_FIXED_SECONDS),
        ),
    ]
    text = [
        "",
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {events:,} events, {r['args']['month']}, "
        f"seed {r['args']['seed']}, {r['args'].get('shapes', 'canonical')} shapes"
        + _hot_title(r["args"]),
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, {m['memory_gib']} GiB RAM, Python "
        f"{m['python']}. Load average (1/5/15 min) at start "
        f"{'/'.join(f'{x:.1f}' for x in m['loadavg_at_start'])}, at end "
        f"{'/'.join(f'{x:.1f}' for x in m['loadavg_at_end'])} (other work on the machine "
        f"inflates every figure). Objects: {r['generate']['objects']:,} "
        f"({r['generate']['bytes'] / 1e6:,.1f} MB). Result: {b['checks']}.",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        *(f"| {a} | {v} | {t} | {ok} |" for a, v, t, ok in rows),
        "",
    ]
    if not BENCHMARKS_MD.exists():
        BENCHMARKS_MD.write_text(HEADER.read_text())
    with open(BENCHMARKS_MD, "a") as out:
        out.write("\n".join(text))


def cpu_per_event(b: dict, events: int) -> tuple[float, float]:
    """(CPU microseconds, wall core-microseconds) per event: user+system CPU of this process
    and of every descendant the sampler saw (or the waited-for children, if more), and the
    backfill's wall seconds times the cores it may use: what a bill for the machine is
    proportional to."""
    cpu = b["cpu_self"] + max(b["cpu_children"], b.get("cpu_descendants_sampled", 0.0))
    return 1e6 * cpu / events, 1e6 * b["seconds"] * (os.cpu_count() or 1) / events


def record_spark(r: dict) -> None:
    """The Spark backfill as a section of its own (the same month, the same stages and
    figures as the DuckDB rows where they exist; no ingestion split, reference or
    incremental runs, which measure DuckDB)."""
    b, m = r["backfill"], r["machine"]
    events = r["args"]["events"]
    rate = events / b["seconds"]
    cpu_us, core_us = cpu_per_event(b, events)
    rows = [
        ("generate (not in pipeline)", f"{r['generate']['seconds']:.1f} s", "", ""),
        ("backfill end to end", f"{b['seconds']:.1f} s", "", ""),
        (
            "events/s",
            f"{rate:,.0f}",
            f">= {TARGET_EVENTS / TARGET_SECONDS:,.0f} (10M < 5 min)",
            _met(rate >= TARGET_EVENTS / TARGET_SECONDS),
        ),
        *(
            (
                f"run {run['job']} (wall / run overhead)",
                f"{run['wall']:.1f} s / {run['overhead']:.1f} s"
                + ("" if run["success"] else " **FAILED**"),
                "",
                "",
            )
            for run in b["runs"]
        ),
        *(
            (f"stage: {stage}", f"{secs:.1f} s ({100 * secs / b['seconds']:.0f}%)", "", "")
            for stage, secs in b["stages"].items()
        ),
        *(
            (f"step {step}", f"{secs:.1f} s", "", "")
            for run in b["runs"]
            for step, secs in run["steps"].items()
        ),
        (
            "peak RSS of the run: this process + dbt + Spark JVMs (this process alone)",
            f"{_mb(b['rss_peak_run'])} ({_mb(b['rss_peak_backfill'])})",
            "<= 2 GiB at 10M",
            _met(b["rss_peak_run"] <= TARGET_PEAK_BYTES)
            + ("" if events >= TARGET_EVENTS else f" at {events:,}"),
        ),
        (
            "CPU: this process / every descendant (dbt, JVMs)",
            f"{b['cpu_self']:.1f} s / {b.get('cpu_descendants_sampled', 0):.1f} s",
            "",
            "",
        ),
        (
            "cost per event: CPU / wall x cores",
            f"{cpu_us:,.0f} us / {core_us:,.0f} core-us",
            "",
            "",
        ),
    ]
    loads = "/".join(f"{x:.1f}" for x in m["loadavg_at_start"])
    loads_end = "/".join(f"{x:.1f}" for x in m["loadavg_at_end"])
    text = [
        "",
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {events:,} events, {r['args']['month']}, "
        f"seed {r['args']['seed']}, {r['args'].get('shapes', 'canonical')} shapes, "
        f"**Spark engine** (`--engine spark`, master {r['spark_master']})",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, {m['memory_gib']} GiB RAM, Python "
        f"{m['python']}. Load average (1/5/15 min) at start {loads}, at end {loads_end} "
        "(other work on the machine inflates every figure). Parquet lake and dbt-spark "
        f"(session mode, one JVM per dbt process). Objects: {r['generate']['objects']:,} "
        f"({r['generate']['bytes'] / 1e6:,.1f} MB). Result: {b['checks']}.",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        *(f"| {a} | {v} | {t} | {ok} |" for a, v, t, ok in rows),
        "",
    ]
    if not BENCHMARKS_MD.exists():
        BENCHMARKS_MD.write_text(HEADER.read_text())
    with open(BENCHMARKS_MD, "a") as out:
        out.write("\n".join(text))


if __name__ == "__main__":
    sys.exit(main())
