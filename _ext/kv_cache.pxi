# The paged KV cache's arrays as the C kernels take them: float32, or IEEE half (kv16). Included by the
# modules that hand a cache to C (attention.pyx, decode_step.pyx).
from libc.stdint cimport uint16_t


cdef void *kv_data(object cache, int *kv16) except NULL:
    """The data of a cache array (C-contiguous float32 or float16; written in place, so never a copy) and,
    in kv16, whether it holds halves."""
    cdef float[::1] f32
    cdef uint16_t[::1] f16
    if not cache.flags.c_contiguous or cache.size == 0:
        raise ValueError("the KV cache must be a non-empty C-contiguous array")
    if cache.dtype == np.float32:
        f32 = cache.reshape(-1)
        kv16[0] = 0
        return &f32[0]
    if cache.dtype == np.float16:
        f16 = cache.reshape(-1).view(np.uint16)
        kv16[0] = 1
        return &f16[0]
    raise ValueError(f"the KV cache holds {cache.dtype}, not float32 or float16")
