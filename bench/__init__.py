"""``make bench``: the end-to-end benchmark of tokenbill (see BENCHMARKS.md)."""
