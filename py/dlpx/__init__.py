"""dlpx: zero-copy tensor exchange through DLPack.

    >>> import numpy as np, dlpx
    >>> t = dlpx.from_dlpack(np.arange(6.0).reshape(2, 3))   # no copy
    >>> t[:, ::-1].T.shape
    (3, 2)
    >>> import torch; torch.from_dlpack(t)                     # no copy

The work is done by libdlpx, a C library loaded with cffi; this package has
no compiled extension, so one build serves every Python version.
"""

from ._lib import LIBRARY_VERSION, ffi, lib, library_path
from ._dtypes import ALL_DTYPES, Device, DLDeviceType, dtype
from ._tensor import Tensor, dlpack_fallback as _dlpack_fallback
from . import _bridge
from ._create import empty, from_dlpack, frombuffer, stats, zeros

__version__ = "0.1.0"

__all__ = [
    "Tensor", "from_dlpack", "empty", "zeros", "frombuffer", "dtype", "Device", "DLDeviceType",
    "stats", "ffi", "lib", "library_path", "LIBRARY_VERSION", "__version__",
] + [d.name for d in ALL_DTYPES]

_bridge.register(lambda: object.__new__(Tensor), _dlpack_fallback)
_bridge.install_methods(Tensor)

# Module-level dtype constants: dlpx.float32, dlpx.bfloat16, ...
for _d in ALL_DTYPES:
    globals()[_d.name] = _d
del _d
