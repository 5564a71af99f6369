"""Timing a module's functions in place, for the benchmarks' instrumented passes."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType


@contextmanager
def timed_functions(module: ModuleType, names: Iterable[str]) -> Iterator[dict[str, float]]:
    """Replace ``module.<name>`` for each name by a wrapper adding its wall seconds to the
    dict yielded (callers inside the module see the wrapper), and put the originals back."""
    timers: dict[str, float] = defaultdict(float)
    saved = {name: getattr(module, name) for name in names}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timers[name] += time.perf_counter() - t

        return wrapper

    try:
        for name, fn in saved.items():
            setattr(module, name, timed(name, fn))
        yield timers
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)
