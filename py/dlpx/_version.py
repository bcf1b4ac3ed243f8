"""The version of this package.

The one place the version is written is configure.ac; setup.py copies it
into the generated module ``dlpx/_build.py`` when it builds the package,
with the soname of the libdlpx built alongside.  A source checkout run in
place (``PYTHONPATH=py``) has no ``_build.py``: the package then takes its
version from the library it loads and checks nothing.
"""

from __future__ import annotations

try:
    from ._build import SONAME, __version__  # type: ignore[import-not-found,import-untyped,unused-ignore]
except ImportError:  # a checkout run in place
    __version__: str | None = None  # type: ignore[no-redef]
    SONAME: str = "libdlpx.so"  # type: ignore[no-redef]

VERSION: tuple[int, ...] | None = (
    tuple(int(p) for p in __version__.split(".")) if __version__ else None)

__all__ = ["__version__", "VERSION", "SONAME"]
