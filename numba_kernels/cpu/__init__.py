"""CPU kernels compiled with Numba (`@njit(nogil=True, fastmath=True, cache=True)`)."""

import mistralcli.numba_kernels  # noqa: F401  (sets the cache directory before numba loads)
