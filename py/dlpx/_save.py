"""Saving tensors in the safetensors format: :func:`save_file` (crash-safe:
a temporary file, fsync, rename, fsync of the directory; done in libdlpx)
and :func:`save` (to bytes)."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping, Optional

from ._convert import exportable
from ._files import METADATA_PREFIX, handle, path_arg
from ._errors import check
from ._lib import ffi, lib
from ._remote import Options, is_url

__all__ = ["save_file", "save", "TIED"]

#: What save_file does with tensors that are the same view of one memory.
TIED = ("error", "once")


def _host_view(name: str, t: Any) -> Any:
    from ._consume import from_dlpack
    from ._tensor import Tensor
    if isinstance(t, Tensor):
        return t
    t = exportable(t)
    try:
        return from_dlpack(t)
    except TypeError:
        if not hasattr(t, "__dlpack__"):
            import numpy as np
            if isinstance(t, (list, tuple, int, float, complex, bool, np.generic)):
                return from_dlpack(np.asarray(t))
            raise TypeError(f"tensor {name!r}: {type(t).__name__} is not a tensor (it has no "
                            "__dlpack__)") from None
        raise


def _check_strs(what: str, d: Mapping[Any, Any]) -> None:
    for k, v in d.items():
        if not isinstance(k, str):
            raise TypeError(f"{what} keys must be strings, not {type(k).__name__} ({k!r})")
        if what == "metadata" and not isinstance(v, str):
            raise TypeError(f"metadata values must be strings, not {type(v).__name__} "
                            f"(key {k!r})")
        if "\0" in k or (what == "metadata" and "\0" in v):
            raise ValueError(f"{what} key {k!r} or its value contains a NUL character")


def _encode(s: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{s!r} is not valid UTF-8 text ({e.reason})") from None


def save_file(tensors: Mapping[str, Any], filename: Any, metadata: Optional[Mapping[str, str]] = None,
              *, checksum: bool = True, tied: str = "error", fsync: bool = True,
              storage_options: Optional[dict[str, Any]] = None) -> None:
    """Saves a dict of name -> tensor (any host DLPack tensor: NumPy,
    PyTorch, JAX, dlpx; any layout) to |filename| in the safetensors format,
    in the reference writer's order and padding, with |metadata| (str ->
    str) in __metadata__.  The save is crash-safe: a crash leaves the old
    file or the new one, never a torn file.

    |checksum| stores XXH3 checksums of each tensor (under "dlpx.checksums",
    ignored by other readers), verified by dlpx's loaders.  Tensors that
    share memory (tied weights) raise ValueError naming both, unless |tied|
    is "once": then tensors that are the same view are stored once and
    restored under every name by dlpx's loaders.  |fsync|=False skips the
    fsyncs (faster, not crash-safe).

    |filename| may be an ``s3://`` URL: a multipart upload of parallel
    parts, completed only when every part is in, so the object appears
    whole or not at all (a failed upload is aborted, leaving no parts);
    ``http(s)://`` URLs get one PUT.  |storage_options| as for
    :func:`dlpx.load_file` (``checksum="crc32"`` sends S3 checksum headers,
    which some S3-compatible servers refuse, so they are off by default)."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a dict of name -> tensor, not {type(tensors).__name__}")
    if tied not in TIED:
        raise ValueError(f"tied must be one of {TIED}, not {tied!r}")
    path = path_arg(filename)
    _check_strs("tensor name", tensors)
    meta = dict(metadata) if metadata is not None else {}
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict of str -> str, not {type(metadata).__name__}")
    _check_strs("metadata", meta)
    for k in meta:
        if k.startswith(METADATA_PREFIX):
            raise ValueError(f"metadata key {k!r}: keys starting with {METADATA_PREFIX!r} are "
                             "reserved for dlpx")
    names = list(tensors)
    views = [_host_view(n, tensors[n]) for n in names]
    c_names = [ffi.new("char[]", _encode(n)) for n in names]
    c_keys = [ffi.new("char[]", _encode(k)) for k in meta]
    c_vals = [ffi.new("char[]", _encode(v)) for v in meta.values()]
    handles = [handle(v) for v in views]
    flags = ((lib.DLPX_SAVE_CHECKSUMS if checksum else 0)
             | (lib.DLPX_SAVE_ALIASES_ONCE if tied == "once" else 0)
             | (0 if fsync else lib.DLPX_SAVE_NO_FSYNC)
             | (lib.DLPX_SAVE_METADATA if metadata is not None else 0))
    if is_url(path):
        opts = Options(path, storage_options)
        rc = lib.dlpx_save_url(_encode(path), opts.c, len(names), ffi.new("char *[]", c_names),
                               ffi.new("dlpx_tensor *[]", handles), len(meta),
                               ffi.new("char *[]", c_keys), ffi.new("char *[]", c_vals), flags)
        del views
        check(rc)
        return
    if storage_options:
        raise ValueError(f"{path}: storage_options are for URLs (http://, https://, s3://), "
                         "not local files")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"{path}: the directory {parent} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory")
    rc = lib.dlpx_save_file(_encode(path), len(names), ffi.new("char *[]", c_names),
                            ffi.new("dlpx_tensor *[]", handles), len(meta),
                            ffi.new("char *[]", c_keys), ffi.new("char *[]", c_vals), flags)
    del views  # alive until the C call returned
    check(rc)


def save(tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None, *,
         checksum: bool = True, tied: str = "error") -> bytes:
    """The bytes of the safetensors file save_file would write."""
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    os.close(fd)
    try:
        save_file(tensors, path, metadata, checksum=checksum, tied=tied, fsync=False)
        with open(path, "rb") as f:
            return f.read()
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
