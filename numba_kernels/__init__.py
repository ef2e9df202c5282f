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

