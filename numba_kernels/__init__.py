"""Numba kernels. Importing this package points Numba's on-disk cache at the user cache directory,
so kernels compile once per machine instead of once per process."""

import os
import sys

from mistralcli.paths import numba_cache_dir

if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(numba_cache_dir())
    if "numba" in sys.modules:  # imported before us: make it read the variable again
        from numba.core import config

        config.reload_config()


def call_noting_compilation(kernel, *args):
    """kernel(*args); when Numba had to compile it (a cold cache: the first run after installing),
    say so on stderr with the time it took. Later runs load it from the cache silently."""
    import time

    start = time.perf_counter()
    result = kernel(*args)
    stats = getattr(kernel, "stats", None)
    if stats is not None and sum(stats.cache_misses.values()):
        print(
            f"compiled Numba kernel {kernel.__name__} in {time.perf_counter() - start:.1f} s "
            f"(cached in {numba_cache_dir()})",
            file=sys.stderr,
        )
    return result
