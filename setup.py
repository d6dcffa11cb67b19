"""The optional C half of the scanner; everything else is in pyproject.toml.

``optional=True``: where no C compiler is available the build goes on
without it and du_exporter.scan falls back to os.scandir (same numbers,
slower).
"""

from __future__ import annotations

from setuptools import Extension, setup


setup(
    ext_modules=[
        Extension(
            "du_exporter.scan._fastscan",
            ["src/du_exporter/scan/_fastscan.c"],
            optional=True,
            extra_compile_args=["-O2", "-pthread"],
            extra_link_args=["-pthread"],
        )
    ]
)
