"""Memory bandwidth probe: stream an array once per call, parallel over chunks (Numba)."""

import numpy as np
from numba import njit, prange


@njit(nogil=True, fastmath=True, cache=True, parallel=True)
def sum_chunks(data, num_chunks):
    """Sum of data (N,) float32 read in num_chunks parallel stretches (returns the total)."""
    n = data.shape[0]
    step = (n + num_chunks - 1) // num_chunks
    partial = np.zeros(num_chunks, dtype=np.float64)
    for c in prange(num_chunks):
        s = np.float32(0.0)
        for i in range(c * step, min(n, (c + 1) * step)):
            s += data[i]
        partial[c] = s
    return partial.sum()
