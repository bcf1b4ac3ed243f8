"""dlpx: zero-copy tensor exchange through DLPack.

    >>> import numpy as np, dlpx
    >>> t = dlpx.from_dlpack(np.arange(6.0).reshape(2, 3))   # no copy
    >>> t[:, ::-1].T.shape
    (3, 2)
    >>> import torch; torch.from_dlpack(t)                     # no copy

The work is done by libdlpx, a C library loaded with cffi; this package has
no compiled extension, so one build serves every Python version.
"""

from . import _capi

if not _capi.is_main_interpreter():
    # libdlpx is one per process and holds objects of the interpreter that
    # registered with it: a sub-interpreter's registration (and its shutdown)
    # would break the main interpreter's tensors.
    raise ImportError("dlpx can only be imported in the main interpreter, not in a "
                      "sub-interpreter")

from . import _bridge
from ._consume import from_dlpack
from ._create import DEFAULT_DTYPE, empty, frombuffer, zeros
from ._devices import Device, DLDeviceType
from ._dtypes import ALL_DTYPES, dtype
from ._errors import ErrorCode
from ._lib import LIBRARY_VERSION, __version__, ffi, include_dir, lib, library_path
from ._load import direct_available, load, load_file, load_into, safe_open
from ._save import save, save_file
from ._share import Handle, attach, share, unlink
from . import remote
from ._stats import stats
from ._tensor import Tensor, dlpack_fallback as _dlpack_fallback

__all__ = [
    "Tensor", "from_dlpack", "empty", "zeros", "frombuffer", "dtype", "Device", "DLDeviceType",
    "ErrorCode", "DEFAULT_DTYPE", "stats", "ffi", "lib", "library_path", "include_dir",
    "LIBRARY_VERSION", "__version__",
    "save_file", "save", "load_file", "load", "load_into", "safe_open", "direct_available",
    "share", "attach", "unlink", "Handle", "remote",
] + [d.name for d in ALL_DTYPES]

_bridge.register(Tensor, _dlpack_fallback)
_bridge.install_methods(Tensor)

# Module-level dtype constants: dlpx.float32, dlpx.bfloat16, ... (from
# libdlpx's table; __getattr__ gives type checkers their type).
globals().update({_d.name: _d for _d in ALL_DTYPES})


def __getattr__(name: str) -> dtype:
    raise AttributeError(f"module 'dlpx' has no attribute {name!r}")
