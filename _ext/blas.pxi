# BLAS sgemm from scipy.linalg.cython_blas, scipy's documented C-level export of its bundled BLAS.
# Included by the modules whose kernels take the pointer (kernels/gemm.h).
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer

cdef extern from "kernels/gemm.h" nogil:
    ctypedef void (*mcli_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k, float *alpha, float *a,
                                   int *lda, float *b, int *ldb, float *beta, float *c, int *ldc)

cdef mcli_sgemm_fn _sgemm = NULL


def _cython_blas_module():
    """scipy.linalg.cython_blas loaded from its file: importing it through the package would first run
    scipy.linalg's __init__ (0.12 s and 26 MiB here) for one function pointer. The module imports
    nothing itself; it is left out of sys.modules, so a later `import scipy.linalg.cython_blas` goes the
    ordinary way (and gets this same module object: Cython keeps one)."""
    import importlib.machinery
    import importlib.util
    import os
    import sys

    name = "scipy.linalg.cython_blas"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("scipy")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(folder, "linalg", "cython_blas" + suffix)
                if os.path.exists(path):
                    loader = importlib.machinery.ExtensionFileLoader(name, path)
                    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
                    loader.exec_module(module)
                    sys.modules.pop(name, None)
                    return module
    from scipy.linalg import cython_blas  # another layout: the ordinary import

    return cython_blas


cdef mcli_sgemm_fn blas_sgemm() except NULL:
    """The sgemm pointer, loaded once."""
    global _sgemm
    if _sgemm == NULL:
        capsule = _cython_blas_module().__pyx_capi__["sgemm"]
        _sgemm = <mcli_sgemm_fn>PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))
    return _sgemm


def load_blas():
    """Load BLAS now (so that threadpoolctl sees its library before it limits the threads)."""
    blas_sgemm()
