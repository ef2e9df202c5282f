"""Build script: maps the repo directories under the `mistralcli.` import name and builds Cython."""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup


def extension(name: str, openmp: bool = True) -> Extension:
    """mistralcli._ext.<name> from _ext/<name>.pyx; the C kernels in _ext/kernels/ are headers."""
    flags = ["-fopenmp"] if openmp else []
    return Extension(
        f"mistralcli._ext.{name}",
        [f"_ext/{name}.pyx"],
        include_dirs=[numpy.get_include(), "_ext"],
        # no fused multiply-add contraction: dequantization stays bit-exact with gguf's reference
        extra_compile_args=["-O3", "-ffp-contract=off", *flags],
        extra_link_args=flags,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


extensions = [extension("sampler", openmp=False), extension("block_pool", openmp=False)] + [
    extension(name) for name in ("qmatmul", "attention", "elementwise", "decode_step", "quantizers")
]

setup(
    packages=[
        "mistralcli",
        *(f"mistralcli.{name}" for name in find_packages("mistralcli")),
        "mistralcli._ext",
        "mistralcli.numba_kernels",
        *(f"mistralcli.numba_kernels.{name}" for name in find_packages("numba_kernels")),
        "mistralcli.commands",
    ],
    package_dir={
        "mistralcli": "mistralcli",
        "mistralcli._ext": "_ext",
        "mistralcli.numba_kernels": "numba_kernels",
        "mistralcli.commands": "commands",
    },
    ext_modules=cythonize(extensions, language_level=3),
    package_data={"mistralcli._ext": ["*.pyx"]},
)
