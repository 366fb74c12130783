"""Build of the optional C extension (the fused distillation kernel); everything else is in pyproject.toml.

``pip install .`` / ``pip install -e .`` compile ``src/darkknowledge/_fused_kd.c`` into the module
``darkknowledge._fused_kd_c`` inside the package. The extension is optional: where no C compiler is
found the install still succeeds and the loss runs on its eager torch path (said once at first use).
Flags: ``-O3`` and ``-fopenmp-simd`` (the vectorisation pragmas only, no OpenMP runtime); never
``-ffast-math`` (``-inf`` and NaN keep their IEEE meaning) and never ``-march=native`` (a built wheel
must run on any CPU of its platform; the kernel picks an AVX2 clone at load time where it can).
"""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    COMPILE_ARGS = ["/O2"]
else:
    COMPILE_ARGS = ["-O3", "-std=c99", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"]

setup(
    ext_modules=[
        Extension(
            "darkknowledge._fused_kd_c",
            sources=["src/darkknowledge/_fused_kd.c"],
            extra_compile_args=COMPILE_ARGS,
            libraries=[] if sys.platform == "win32" else ["m"],
            optional=True,
        )
    ]
)
