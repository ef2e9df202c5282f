# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Causal GQA attention over the paged cache (C, kernels/attention.h); reference: ReferenceOps.paged_attention.

Legend: T queries, S keys, H query heads, Hkv key/value heads, D head dim.
"""

from cython.parallel cimport parallel, prange
from libc.stdint cimport int32_t, int64_t, uint16_t
from libc.stdlib cimport free, malloc

import numpy as np

cdef extern from "kernels/attention.h" nogil:
    int mcli_simd_level()
    void mcli_to_fp16_row(uint16_t *dst, const float *x, int64_t n, int level)
    void mcli_attend_paged_heads(const float *q, int nh, const void *k, const void *v, const int32_t *table,
                                 int64_t bs, int64_t first, int64_t num_keys, int64_t stride, int d, float scale,
                                 float *scores, float *out, int level, int kv16)
    int MCLI_ATTN_GROUP

include "kv_cache.pxi"

SIMD_LEVEL = mcli_simd_level()


def to_fp16(const float[::1] x, int simd_level=-1):
    """x as IEEE halves (numpy float16), rounded as the decode step rounds the keys and values it stores in a
    float16 cache: the same bits as x.astype(np.float16), which stores those of prompt chunks."""
    out = np.empty(x.shape[0], np.float16)
    cdef uint16_t[::1] bits = out.view(np.uint16)
    cdef int level = SIMD_LEVEL if simd_level < 0 else simd_level
    if x.shape[0]:
        mcli_to_fp16_row(&bits[0], &x[0], x.shape[0], level)
    return out


def paged_attention(float[:, :, ::1] out, const float[:, :, ::1] q, k, v, const int32_t[:, ::1] block_tables,
                    const int32_t[::1] seq_index, const int64_t[::1] q_positions, float scale, int num_threads=1,
                    int simd_level=-1, int64_t window=0):
    """out (T, H, D): causal attention of prompt queries q (T, H, D) over one layer of the paged cache,
    k, v (NB, BS, Hkv, D), C-contiguous, both float32 or both float16. Query t belongs to the sequence whose
    blocks are block_tables[seq_index[t]] and sees its positions 0..q_positions[t], or with a sliding window
    the last `window` of them. Parallel over (query, head); reference: ReferenceOps.paged_attention."""
    cdef Py_ssize_t num_tokens = q.shape[0], num_heads = q.shape[1], d = q.shape[2]
    cdef Py_ssize_t num_kv = k.shape[2], bs = k.shape[1], job, t, h, longest = 0
    if (num_kv == 0 or num_heads % num_kv or k.shape[3] != d or tuple(v.shape) != tuple(k.shape)
            or tuple(out.shape) != tuple(q.shape) or seq_index.shape[0] != num_tokens
            or q_positions.shape[0] != num_tokens):
        raise ValueError("attention shapes do not match")
    for t in range(num_tokens):
        if not 0 <= seq_index[t] < block_tables.shape[0]:
            raise ValueError(f"query {t} names sequence {seq_index[t]}, not in the block tables")
        if q_positions[t] < 0 or q_positions[t] // bs >= block_tables.shape[1]:
            raise ValueError(f"position {q_positions[t]} is beyond the block table")
        for h in range(q_positions[t] // bs + 1):
            if not 0 <= block_tables[seq_index[t], h] < k.shape[0]:
                raise ValueError(f"block {block_tables[seq_index[t], h]} is not in the cache")
        longest = max(longest, q_positions[t] + 1)
    if num_tokens == 0:
        return
    cdef int kv16, v16
    cdef const char *kp = <const char *>kv_data(k, &kv16)
    cdef const char *vp = <const char *>kv_data(v, &v16)
    if v16 != kv16:
        raise ValueError("the key and value caches hold different types")
    cdef int64_t es = 2 if kv16 else 4, row = num_kv * d
    cdef int group = num_heads // num_kv, level = SIMD_LEVEL if simd_level < 0 else simd_level
    cdef float *scores
    with nogil, parallel(num_threads=max(1, num_threads)):
        scores = <float *>malloc(MCLI_ATTN_GROUP * ((longest + 7) // 8 * 8 + 8) * sizeof(float))
        # a job: one query's heads that share a key/value head; causal, so interleaved over the threads
        for job in prange(num_tokens * num_kv, schedule="static", chunksize=1):
            t = job // num_kv
            h = job % num_kv
            mcli_attend_paged_heads(&q[t, h * group, 0], group, kp + h * d * es, vp + h * d * es,
                                    &block_tables[seq_index[t], 0], bs,
                                    q_positions[t] + 1 - window if 0 < window <= q_positions[t] else 0,
                                    q_positions[t] + 1, row, <int>d,
                                    scale, scores, &out[t, h * group, 0], level, kv16)
        free(scores)
