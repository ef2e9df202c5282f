# BLAS sgemm from scipy.linalg.cython_blas, scipy's documented C-level export of its bundled BLAS.
# Included by the modules whose kernels take the pointer (kernels/gemm.h).
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer

cdef extern from "kernels/gemm.h" nogil:
    ctypedef void (*mcli_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k, float *alpha, float *a,
                                   int *lda, float *b, int *ldb, float *beta, float *c, int *ldc)

cdef mcli_sgemm_fn _sgemm = NULL


cdef mcli_sgemm_fn blas_sgemm() except NULL:
    """The sgemm pointer, loaded once."""
    global _sgemm
    if _sgemm == NULL:
        from scipy.linalg import cython_blas
        capsule = cython_blas.__pyx_capi__["sgemm"]
        _sgemm = <mcli_sgemm_fn>PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))
    return _sgemm


def load_blas():
    """Load BLAS now (so that threadpoolctl sees its library before it limits the threads)."""
    blas_sgemm()
