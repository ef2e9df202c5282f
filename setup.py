"""Build script: maps the repo directories under the `mistralcli.` import name and builds Cython."""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "mistralcli._ext.sampler",
        ["_ext/sampler.pyx"],
        include_dirs=[numpy.get_include()],
        extra_compile_args=["-O3"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "mistralcli._ext.llama_step",
        ["_ext/llama_step.pyx"],
        include_dirs=[numpy.get_include(), "_ext"],
        extra_compile_args=["-O3", "-fopenmp", "-ffp-contract=off"],
        extra_link_args=["-fopenmp"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "mistralcli._ext.attention",
        ["_ext/attention.pyx"],
        include_dirs=[numpy.get_include(), "_ext"],
        extra_compile_args=["-O3", "-fopenmp", "-ffp-contract=off"],
        extra_link_args=["-fopenmp"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "mistralcli._ext.qmatmul",
        ["_ext/qmatmul.pyx"],
        include_dirs=[numpy.get_include(), "_ext"],
        extra_compile_args=["-O3", "-fopenmp", "-ffp-contract=off"],
        extra_link_args=["-fopenmp"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(
    packages=[
        "mistralcli",
        "mistralcli.loading",
        "mistralcli.tokenizer",
        "mistralcli.models",
        "mistralcli.ops",
        "mistralcli._ext",
        "mistralcli.numba_kernels",
        "mistralcli.numba_kernels.cpu",
        "mistralcli.commands",
    ],
    package_dir={
        "mistralcli": "mistralcli",
        "mistralcli._ext": "_ext",
        "mistralcli.numba_kernels": "numba_kernels",
        "mistralcli.numba_kernels.cpu": "numba_kernels/cpu",
        "mistralcli.commands": "commands",
    },
    ext_modules=cythonize(extensions, language_level=3),
    package_data={"mistralcli._ext": ["*.pyx"]},
)
