# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Causal GQA attention for prefill (C, kernels/attention.h); reference: ReferenceOps.attention.

Legend: T queries, S keys, H query heads, Hkv key/value heads, D head dim.
"""

from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

cdef extern from "kernels/attention.h" nogil:
    ctypedef void (*mcli_attend_fn)(const float *qh, const float *k, const float *v, const int64_t *k_pos,
                                    int64_t limit, int64_t num_keys, int64_t stride, int d, float scale,
                                    float *scores, float *out)
    int mcli_simd_level()
    mcli_attend_fn mcli_select_attend(int level, int d)

SIMD_LEVEL = mcli_simd_level()


def causal_attention(float[:, :, ::1] out, const float[:, :, ::1] q, const float[:, :, ::1] k,
                     const float[:, :, ::1] v, const int64_t[::1] q_positions, const int64_t[::1] k_positions,
                     float scale, int num_threads=1, int simd_level=-1):
    """out (T, H, D) = causal softmax(q k^T * scale) v, parallel over (query, head)."""
    cdef Py_ssize_t num_tokens = q.shape[0], num_heads = q.shape[1], d = q.shape[2]
    cdef Py_ssize_t num_keys = k.shape[0], num_kv = k.shape[1], group, job, t, h
    if num_kv == 0 or num_heads % num_kv or k.shape[2] != d or v.shape[0] != num_keys or k_positions.shape[0] != num_keys:
        raise ValueError("attention shapes do not match")
    group = num_heads // num_kv
    cdef mcli_attend_fn attend = mcli_select_attend(SIMD_LEVEL if simd_level < 0 else simd_level, <int>d)
    cdef float *scores
    with nogil, parallel(num_threads=max(1, num_threads)):
        scores = <float *>malloc(max(1, num_keys) * sizeof(float))
        for job in prange(num_tokens * num_heads, schedule="static"):
            t = job // num_heads
            h = job % num_heads
            attend(&q[t, h, 0], &k[0, h // group, 0], &v[0, h // group, 0], &k_positions[0], q_positions[t],
                   num_keys, num_kv * d, <int>d, scale, scores, &out[t, h, 0])
        free(scores)
