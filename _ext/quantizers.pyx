# cython: boundscheck=False, wraparound=False, cdivision=True
"""The quantizers in C, parallel over blocks: Q4_K, Q5_K and Q6_K with a super-block's sub-blocks searched side by
side in AVX2 lanes (kernels/kquant.h; K_AVAILABLE False on a CPU without AVX2), and the legacy block types and
BF16 (kernels/legacy_quant.h). The same bytes as numba_kernels/cpu (quantize.py, kquants.py), which run for the
other types, and as llama.cpp and gguf (tests/test_kquants.py, tests/test_quantize.py)."""

from cython.parallel cimport prange
from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t

cdef extern from "kernels/kquant.h" nogil:
    int mcli_kq_available()
    void mcli_kq_q4_q5_block(const float *x, const float *qw, int weighted, int nmax, uint8_t *out)
    void mcli_kq_q6_block(const float *x, const float *qw, int weighted, uint8_t *out)

cdef extern from "kernels/legacy_quant.h" nogil:
    void mcli_q4_0_block(const float *x, float *d, uint8_t *qs)
    void mcli_q4_1_block(const float *x, float *d, float *m, uint8_t *qs)
    void mcli_q5_0_block(const float *x, float *d, uint32_t *qh, uint8_t *qs)
    void mcli_q5_1_block(const float *x, float *d, float *m, uint32_t *qh, uint8_t *qs)
    void mcli_q8_0_block(const float *x, float *d, int8_t *qs)
    uint16_t mcli_lq_bf16(uint32_t n)

K_AVAILABLE = bool(mcli_kq_available())
K_TYPES = (12, 13, 14)  # Q4_K, Q5_K, Q6_K


def k_blocks(const float[:, ::1] x, const float[:, ::1] qw, bint weighted, int qtype, uint8_t[:, ::1] out,
             int num_threads=1):
    """x (n, 256) super-blocks into out (n, block bytes); qw (blocks per row, 256): block b's importance is
    qw[b % len(qw)] (used when weighted)."""
    if not K_AVAILABLE:
        raise RuntimeError("no AVX2 on this CPU: numba_kernels/cpu/kquants.py quantizes instead")
    if qtype not in K_TYPES or x.shape[1] != 256 or qw.shape[1] != 256 or out.shape[0] != x.shape[0]:
        raise ValueError("Q4_K, Q5_K or Q6_K super-blocks of 256")
    cdef Py_ssize_t b, n = x.shape[0], per_row = qw.shape[0]
    cdef int w = weighted
    for b in prange(n, nogil=True, schedule="static", num_threads=max(1, num_threads)):
        if qtype == 14:
            mcli_kq_q6_block(&x[b, 0], &qw[b % per_row, 0], w, &out[b, 0])
        else:
            mcli_kq_q4_q5_block(&x[b, 0], &qw[b % per_row, 0], w, 15 if qtype == 12 else 31, &out[b, 0])


def legacy_blocks(const float[:, ::1] x, int qtype, float[::1] d, float[::1] m, uint32_t[::1] qh, uint8_t[:, ::1] qs,
                  int num_threads=1):
    """x (n, 32) blocks of Q4_0 (2), Q4_1 (3), Q5_0 (6), Q5_1 (7) or Q8_0 (8): scales into d, minimums into m
    (Q4_1, Q5_1), high bits into qh (Q5_0, Q5_1), the packed quants into qs ((n, 16); Q8_0's int8 (n, 32))."""
    if x.shape[1] != 32 or qtype not in (2, 3, 6, 7, 8):
        raise ValueError("blocks of 32 of a legacy type")
    cdef Py_ssize_t b, n = x.shape[0]
    for b in prange(n, nogil=True, schedule="static", num_threads=max(1, num_threads)):
        if qtype == 2:
            mcli_q4_0_block(&x[b, 0], &d[b], &qs[b, 0])
        elif qtype == 3:
            mcli_q4_1_block(&x[b, 0], &d[b], &m[b], &qs[b, 0])
        elif qtype == 6:
            mcli_q5_0_block(&x[b, 0], &d[b], &qh[b], &qs[b, 0])
        elif qtype == 7:
            mcli_q5_1_block(&x[b, 0], &d[b], &m[b], &qh[b], &qs[b, 0])
        else:
            mcli_q8_0_block(&x[b, 0], &d[b], <int8_t *>&qs[b, 0])


def bf16(const uint32_t[::1] bits, uint16_t[::1] out, int num_threads=1):
    """float32 bits to bfloat16 bits (ggml_compute_fp32_to_bf16)."""
    cdef Py_ssize_t i, n = bits.shape[0]
    for i in prange(n, nogil=True, schedule="static", num_threads=max(1, num_threads)):
        out[i] = mcli_lq_bf16(bits[i])
