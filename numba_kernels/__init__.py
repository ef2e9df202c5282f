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


def warm_up(notify=None) -> None:
    """Compile (or load from the cache) the CPU kernels now, telling `notify` when it is the first
    time on this machine: that takes about a second, every later start only loads them."""
    import time
    from pathlib import Path

    import numba
    import numpy as np

    from mistralcli import __version__
    from mistralcli.numba_kernels.cpu.attention import causal_attention

    marker = Path(os.environ["NUMBA_CACHE_DIR"]) / f".compiled-{__version__}-numba-{numba.__version__}"
    first_time = not marker.exists()
    if first_time and notify:
        notify(f"compiling kernels (first run; cached in {marker.parent})…")
    start = time.perf_counter()
    q = np.zeros((1, 1, 32), dtype=np.float32)
    causal_attention(np.empty_like(q), q, q, q, np.zeros(1, np.int64), np.zeros(1, np.int64), np.float32(1.0))
    if first_time:
        if notify:
            notify(f"compiled kernels in {time.perf_counter() - start:.1f} s")
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass
