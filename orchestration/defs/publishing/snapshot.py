"""Publishing the analysts' copy of the warehouse: a consistent file, swapped in atomically.

Why a copy. DuckDB allows one writer per file, and a writer cannot open a file that another
process holds open, even read-only: an analyst's session on the warehouse made the next run
wait (``Warehouse.lock_timeout_seconds``) and then fail. Analysts and ``make docs`` read a
copy instead, which no run ever opens for writing, so nothing a reader does can block a run.
The price is staleness (the copy is the state as of the last run that finished) and the disk
of the copies (see the README's "How analysts read while runs write").

How. The published path (``<analyst_dir>/<warehouse file name>``) is a symbolic link to a
*slot*, ``<analyst_dir>/.slots/<n>/<warehouse file name>``, one complete copy each. Holding
DuckDB's write lock (the step is in the ``tokenbill_warehouse`` pool, so no other tokenbill
writer runs; the lock keeps out any other process), ``checkpoint`` so that the warehouse file
alone holds every committed change, then bring a slot other than the published one up to date,
open it read-only to prove it is a database, and swap the link onto it (``os.replace`` of a new
link: atomic, so whoever opens the path gets the previous copy or the new one, never a mix).

Why slots. Copying the whole file every run cost a run time proportional to the warehouse
(7.9 s of an hourly run after a 10M-event month, against 0.9 s after a day): an hourly run
changes a few percent of its blocks. So the slot published two runs ago is updated in place:
every 1 MiB chunk of the warehouse is compared with the slot's and only the chunks that differ
are written (reads of both files, mostly from the page cache, and a few writes, instead of
writing the whole file). That is safe only while no one reads the slot: a DuckDB session holds a
POSIX lock on the file it opened (shared when read-only), so the slot is updated only if an
exclusive lock on it is granted at once, and that lock is held while the slot is written (a
session trying to open the slot then fails rather than read a half-updated file; after it, until
the swap, no one opens the slot, as no one opens it but through the link, which does not point to
it yet). A slot a session still holds is never written: a new slot
is made by a full copy, and the held one is unlinked (the session keeps reading its file, which
the system frees when the session closes). Slots other than the published one and the one
before it are removed after the swap. A publish that stops half-way leaves the link on the
previous copy; the next publish compares every chunk, so it repairs any slot it reuses.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from orchestration.defs.resources import Warehouse

SLOTS_DIR = ".slots"
#: Chunks compared and rewritten: DuckDB's blocks are 256 KiB, so a changed block rewrites at
#: most 1 MiB; 2,800 comparisons for a 2.8 GiB warehouse.
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Published:
    path: Path
    size_bytes: int
    seconds: float
    tables: int
    #: Bytes written to publish: the file's size for a full copy, the changed chunks for a
    #: slot brought up to date in place.
    written_bytes: int
    #: "in place" (a slot updated chunk by chunk) or "full copy".
    method: str


def publish_snapshot(warehouse: Warehouse) -> Published:
    """Publish the warehouse at ``warehouse.analyst_path`` atomically (the module docstring)."""
    began = time.monotonic()
    destination = warehouse.analyst_path
    slots = destination.parent / SLOTS_DIR
    slots.mkdir(parents=True, exist_ok=True)
    current = _published_slot(destination)
    # The warehouse is read through a descriptor opened before the connection and closed after
    # it: closing a descriptor of a file drops every POSIX lock this process holds on it, the
    # connection's write lock included.
    source_fd = os.open(warehouse.path, os.O_RDONLY)
    try:
        with warehouse.connect() as con:
            con.execute("checkpoint")
            target, lock_fd = _claim_slot(slots, destination.name, current)
            try:
                if lock_fd is None:
                    written, method = _copy_whole(source_fd, target), "full copy"
                else:
                    written, method = _update_in_place(source_fd, lock_fd), "in place"
            finally:
                if lock_fd is not None:
                    # Closing it drops our lock on the slot: no one opens the slot but through
                    # the link, which does not point to it yet.
                    os.close(lock_fd)
    finally:
        os.close(source_fd)
    os.utime(target)  # its time is the publish's, even when no chunk changed
    # The slot has the warehouse's file name, so its views resolve as they will there.
    with duckdb.connect(str(target), read_only=True) as copy:
        tables = copy.execute(
            "select count(*) from information_schema.tables "
            "where table_schema not in ('main', 'information_schema', 'pg_catalog')"
        ).fetchone()[0]
    target.chmod(0o444)  # a reminder to open it read-only; the swap does not need it
    # A write-ahead log left beside the published path (or the slot) by a read-write session
    # belongs to the previous copy: DuckDB would replay it onto the new one.
    destination.with_name(destination.name + ".wal").unlink(missing_ok=True)
    target.with_name(target.name + ".wal").unlink(missing_ok=True)
    link = destination.with_name(destination.name + ".link")
    link.unlink(missing_ok=True)
    link.symlink_to(target.relative_to(destination.parent))
    os.replace(link, destination)
    _fsync_dir(destination.parent)
    _remove_slots(slots, keep={target.parent.resolve(), current.parent if current else None})
    # Staging of the versions that copied the whole file each run.
    shutil.rmtree(destination.parent / ".publishing", ignore_errors=True)
    return Published(
        destination, target.stat().st_size, time.monotonic() - began, tables, written, method
    )


def _published_slot(destination: Path) -> Path | None:
    """The slot the published path links to (None before the first publish, or when the path
    is a plain file, as an earlier version published it)."""
    if not destination.is_symlink():
        return None
    return (destination.parent / os.readlink(destination)).resolve()


def _claim_slot(slots: Path, name: str, current: Path | None) -> tuple[Path, int | None]:
    """The slot to publish into, and an open descriptor holding an exclusive lock on it when
    it is an existing slot to update in place (None: a new slot, to fill by a full copy).

    The newest slot other than the published one whose lock is granted at once is reused.
    """
    numbers = sorted(
        (int(entry.name) for entry in slots.iterdir() if entry.is_dir() and entry.name.isdigit()),
        reverse=True,
    )
    for number in numbers:
        candidate = (slots / str(number) / name).resolve()
        if candidate == current or not candidate.is_file():
            continue
        candidate.chmod(0o644)
        fd = os.open(candidate, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a session holds it: leave it to the session, removed after the swap
            os.close(fd)
            candidate.chmod(0o444)
            continue
        return candidate, fd
    fresh = slots / str((numbers[0] if numbers else 0) + 1)
    fresh.mkdir()
    return fresh / name, None


def _copy_whole(source_fd: int, target: Path) -> int:
    """Copy the file open at ``source_fd`` to the new file ``target`` (in the kernel:
    ``sendfile``) and flush it to disk; the number of bytes written."""
    size = os.fstat(source_fd).st_size
    with open(target, "wb") as out:
        offset = 0
        while offset < size:
            sent = os.sendfile(out.fileno(), source_fd, offset, size - offset)
            if sent == 0:
                break
            offset += sent
        os.fsync(out.fileno())
    return offset


def _update_in_place(source_fd: int, target_fd: int) -> int:
    """Make the file open at ``target_fd`` identical to the one at ``source_fd``, writing only
    the chunks that differ, and flush it to disk; the number of bytes written."""
    size = os.fstat(source_fd).st_size
    written = offset = 0
    while offset < size:
        chunk = os.pread(source_fd, CHUNK_BYTES, offset)
        if not chunk:
            break
        if os.pread(target_fd, len(chunk), offset) != chunk:
            os.pwrite(target_fd, chunk, offset)
            written += len(chunk)
        offset += len(chunk)
    os.ftruncate(target_fd, size)
    os.fsync(target_fd)
    return written


def _remove_slots(slots: Path, keep: set[Path | None]) -> None:
    """Remove every slot but ``keep`` (directories of slots). A session still reading a
    removed slot keeps reading it: its file lives until the session closes it."""
    for entry in slots.iterdir():
        if entry.is_dir() and entry.resolve() not in keep:
            shutil.rmtree(entry, ignore_errors=True)


def _fsync_dir(directory: Path) -> None:
    """Make the swap durable: after a crash the path links to the new copy or the old one."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
