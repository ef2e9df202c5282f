# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""RMSNorm, RoPE, SwiGLU and GeGLU over many tokens (prefill), parallel over tokens: kernels/elementwise.h.

Legend: T tokens, K features, H heads, D head dim, F ffn size. References: ReferenceOps.
"""

from cython.parallel cimport prange
from libc.stdint cimport int64_t

cdef extern from "kernels/elementwise.h" nogil:
    void mcli_rmsnorm(float *out, const float *x, const float *weight, int n, float eps)
    void mcli_rope(float *x, int num_heads, int d, const float *cos_, const float *sin_, int interleaved)
    void mcli_swiglu(float *out, const float *gate, const float *up, int64_t n)
    void mcli_geglu_tanh(float *out, const float *gate, const float *up, int64_t n)


def rmsnorm(float[:, ::1] out, const float[:, ::1] x, const float[::1] weight, float eps, int num_threads=1):
    """out (T, K) = x / sqrt(mean(x^2) + eps) * weight."""
    cdef Py_ssize_t t, k = x.shape[1]
    if weight.shape[0] != k or out.shape[0] != x.shape[0] or out.shape[1] != k:
        raise ValueError("rmsnorm shapes do not match")
    for t in prange(x.shape[0], nogil=True, schedule="static", num_threads=max(1, num_threads)):
        mcli_rmsnorm(&out[t, 0], &x[t, 0], &weight[0], <int>k, eps)


def rope(float[:, :, ::1] x, const float[:, ::1] cos, const float[:, ::1] sin, bint interleaved, int num_threads=1):
    """Rotate x (T, H, D) in place by cos/sin (T, D/2)."""
    cdef Py_ssize_t t
    if cos.shape[0] != x.shape[0] or cos.shape[1] * 2 != x.shape[2] or sin.shape[0] != cos.shape[0]:
        raise ValueError("rope shapes do not match")
    for t in prange(x.shape[0], nogil=True, schedule="static", num_threads=max(1, num_threads)):
        mcli_rope(&x[t, 0, 0], <int>x.shape[1], <int>x.shape[2], &cos[t, 0], &sin[t, 0], interleaved)


def swiglu(float[:, ::1] out, const float[:, ::1] gate, const float[:, ::1] up, int num_threads=1):
    """out (T, F) = silu(gate) * up."""
    cdef Py_ssize_t t
    if gate.shape[0] != up.shape[0] or gate.shape[1] != up.shape[1] or out.shape[0] != gate.shape[0]:
        raise ValueError("swiglu shapes do not match")
    for t in prange(gate.shape[0], nogil=True, schedule="static", num_threads=max(1, num_threads)):
        mcli_swiglu(&out[t, 0], &gate[t, 0], &up[t, 0], gate.shape[1])


def geglu_tanh(float[:, ::1] out, const float[:, ::1] gate, const float[:, ::1] up, int num_threads=1):
    """out (T, F) = gelu_tanh(gate) * up."""
    cdef Py_ssize_t t
    if gate.shape[0] != up.shape[0] or gate.shape[1] != up.shape[1] or out.shape[0] != gate.shape[0]:
        raise ValueError("geglu shapes do not match")
    for t in prange(gate.shape[0], nogil=True, schedule="static", num_threads=max(1, num_threads)):
        mcli_geglu_tanh(&out[t, 0], &gate[t, 0], &up[t, 0], gate.shape[1])
