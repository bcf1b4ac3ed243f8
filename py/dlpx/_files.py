"""An open safetensors file (libdlpx's ``dlpx_file``) for the loaders: its
header as Python values, and tensors read, mapped or sliced from it, as
dlpx Tensors or converted to a framework's tensors through DLPack."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from . import _cuda
from ._bridge import handle, wrap  # (re-exported for the loaders)
from ._dtypes import dtype as _dtype
from ._errors import ErrorCode, check, message
from ._lib import ffi, lib
from ._remote import Options, is_url

__all__ = ["File", "Entry", "handle", "wrap", "FRAMEWORKS", "framework_arg", "convert",
           "METADATA_PREFIX", "path_arg", "index_items"]

#: __metadata__ keys starting with this are dlpx's own (checksums, aliases).
METADATA_PREFIX = "dlpx."
_ALIASES = METADATA_PREFIX + "aliases"


# (the framework names and conversions live in _convert, with the others)
from ._convert import FRAMEWORKS, framework_arg, to_framework as convert  # noqa: E402


def path_arg(path: Any) -> str:
    try:
        p = os.fspath(path)
    except TypeError:
        raise TypeError(f"expected a path (str or os.PathLike), not {type(path).__name__}") from None
    text = os.fsdecode(p) if isinstance(p, bytes) else str(p)
    if "\0" in text:
        raise ValueError("path contains a NUL character")
    return text


class Entry:
    """One tensor of a header: name, dtype (a dlpx.dtype), shape, the
    safetensors dtype name, and its byte range in the data section."""

    __slots__ = ("index", "name", "dtype", "st_dtype", "shape", "begin", "end")

    def __init__(self, index: int, e: Any) -> None:
        self.index = index
        self.name = ffi.string(e.name).decode("utf-8")
        d = e.dtype
        self.dtype = _dtype._make(d.code, d.bits, d.lanes)
        self.st_dtype = ffi.string(lib.dlpx_st_dtype_name(d)).decode()
        self.shape = tuple(e.shape[i] for i in range(e.ndim))
        self.begin = int(e.begin)
        self.end = int(e.end)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    def __repr__(self) -> str:
        return f"Entry({self.name!r}, {self.st_dtype}, {self.shape}, [{self.begin}, {self.end}))"


# codes that a header's content causes: all of them a malformed file
_MALFORMED = {int(getattr(ErrorCode, n)) for n in ("EDTYPE", "EOVERFLOW", "ESHAPE")}


class File:
    """An open safetensors file: the header was read and validated at open;
    tensors are read on demand.  Thread-safe (reads may run in parallel)."""

    def __init__(self, path: Any, direct: bool = False,
                 storage_options: Optional[dict[str, Any]] = None) -> None:
        self.path = path_arg(path)
        self.remote = is_url(self.path)
        out = ffi.new("dlpx_file **")
        if self.remote:  # http(s):// or s3://: ranged GETs (dlpx/remote.h)
            opts = Options(self.path, storage_options)
            rc = lib.dlpx_file_open_url(self.path.encode("utf-8"), opts.c, 0, out)
            direct = False
        else:
            if storage_options:
                raise ValueError(f"{self.path}: storage_options are for URLs (http://, "
                                 "https://, s3://), not local files")
            os.stat(self.path)  # FileNotFoundError, PermissionError, ... as Python says them
            if os.path.isdir(self.path):
                raise IsADirectoryError(f"{self.path} is a directory, not a safetensors file")
            rc = lib.dlpx_file_open(self.path.encode("utf-8", "surrogateescape"),
                                    lib.DLPX_FILE_DIRECT if direct else 0, out)
        if rc in _MALFORMED:
            raise ValueError(message())  # a malformed file, whatever rule it breaks
        check(rc)
        self._h = ffi.gc(out[0], lib.dlpx_file_close)
        header = lib.dlpx_file_header(self._h)
        self.entries = [Entry(i, lib.dlpx_st_header_entry(header, i))
                        for i in range(lib.dlpx_st_header_count(header))]
        self.by_name = {e.name: e for e in self.entries}
        self.has_metadata = bool(lib.dlpx_st_header_has_metadata(header))
        self.all_metadata: dict[str, str] = {}
        k = ffi.new("const char **")
        v = ffi.new("const char **")
        for i in range(lib.dlpx_st_header_metadata_count(header)):
            check(lib.dlpx_st_header_metadata(header, i, k, v))
            self.all_metadata[ffi.string(k[0]).decode("utf-8")] = \
                ffi.string(v[0]).decode("utf-8")
        self.has_checksums = any(
            lib.dlpx_st_header_checksums(header, e.index, ffi.NULL, ffi.NULL, ffi.NULL)
            for e in self.entries)
        self.aliases = self._aliases()
        self.direct = bool(lib.dlpx_file_direct(self._h)) if direct else False

    def _aliases(self) -> dict[str, str]:
        raw = self.all_metadata.get(_ALIASES)
        if raw is None:
            return {}
        try:
            got = json.loads(raw)
        except ValueError:
            got = None
        if not isinstance(got, dict) or not all(
                isinstance(a, str) and isinstance(b, str) and b in self.by_name
                and a not in self.by_name for a, b in got.items()):
            raise ValueError(f"{self.path}: the {_ALIASES} metadata is malformed")
        return got

    # ---- the header ----------------------------------------------------------

    def metadata(self) -> Optional[dict[str, str]]:
        """The user's metadata, as safetensors returns it: the __metadata__
        map, or None without one.  dlpx's own keys are left out, and a map
        that held only those is None (the user stored none)."""
        user = {k: v for k, v in self.all_metadata.items() if not k.startswith(METADATA_PREFIX)}
        if len(user) < len(self.all_metadata):
            return user or None
        return user if self.has_metadata else None

    def names(self) -> list[str]:
        """Tensor names, aliases included, sorted (as safetensors' keys())."""
        return sorted(list(self.by_name) + list(self.aliases))

    def size(self) -> int:
        """The file's byte size (for a URL: the header's end of data)."""
        if not self.remote:
            return os.path.getsize(self.path)
        end = max((e.end for e in self.entries), default=0)
        return int(lib.dlpx_file_data_offset(self._live())) + end

    def entry(self, name: str) -> Entry:
        if not isinstance(name, str):
            raise TypeError(f"tensor names are strings, not {type(name).__name__}")
        e = self.by_name.get(self.aliases.get(name, name))
        if e is None:
            raise KeyError(f"no tensor named {name!r} in {self.path}")
        return e

    def direct_now(self) -> bool:
        """Whether O_DIRECT reads still work (a refused one turns them off)."""
        return self._h is not None and bool(lib.dlpx_file_direct(self._h))

    # ---- reading -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._h is None

    def _live(self) -> Any:
        if self._h is None:
            raise ValueError(f"I/O operation on a closed file ({self.path})")
        return self._h

    def map(self, e: Entry, verify: bool, writable: bool) -> Any:
        out = ffi.new("dlpx_tensor **")
        flags = (lib.DLPX_READ_VERIFY if verify else 0) | \
            (lib.DLPX_READ_COPY_ON_WRITE if writable else 0)
        check(lib.dlpx_file_map(self._live(), e.index, flags, out))
        return wrap(out[0])

    def empty(self, e: Entry) -> Any:
        out = ffi.new("dlpx_tensor **")
        check(lib.dlpx_file_empty(self._live(), e.index, out))
        return wrap(out[0])

    def empty_many(self, entries: list[Entry]) -> list[Any]:
        """New tensors for |entries| in one block of memory (small tensors:
        one allocation, few page faults)."""
        n = len(entries)
        idx = ffi.new("size_t[]", [e.index for e in entries])
        out = ffi.new("dlpx_tensor *[]", n)
        check(lib.dlpx_file_empty_many(self._live(), n, idx, out))
        return [wrap(out[i]) for i in range(n)]

    def read_range(self, e: Entry, begin: int, end: int, address: int, flags: int) -> None:
        """Reads bytes [begin, end) of |e| to |address| (GIL released)."""
        rc = lib.dlpx_file_read_range(self._live(), e.index, begin, end,
                                      ffi.cast("void *", address), flags)
        if rc:
            check(rc)

    def read_many(self, entries: list[Entry], addresses: list[int], flags: int) -> None:
        """Reads each of |entries| whole to its address, in one call."""
        idx = ffi.new("size_t[]", [e.index for e in entries])
        dst = ffi.new("void *[]", [ffi.cast("void *", a) for a in addresses])
        rc = lib.dlpx_file_read_many(self._live(), len(entries), idx, dst, flags)
        if rc:
            check(rc)

    def load_device(self, entries: list[Entry], device: Any, stream: int, verify: bool,
                    threads: int = 0) -> list[Any]:
        """|entries| read into one new block of CUDA memory on |device|
        through pinned staging buffers, ready on |stream|."""
        n = len(entries)
        if not n:
            return []
        idx = ffi.new("size_t[]", [e.index for e in entries])
        out = ffi.new("dlpx_tensor *[]", n)
        opts = ffi.new("dlpx_cuda_load_options *", {"threads": threads})
        check(lib.dlpx_cuda_file_load(self._live(), n, idx, _cuda.c_device(device), stream, opts,
                                      lib.DLPX_READ_VERIFY if verify else 0, out))
        return [wrap(out[i]) for i in range(n)]

    def read_into(self, e: Entry, t: Any, flags: int) -> None:
        check(lib.dlpx_file_read_into(self._live(), e.index, handle(t), flags))

    def read_slice(self, e: Entry, key: Any, flags: int) -> Any:
        items = index_items(key)
        arr = ffi.new("dlpx_index[]", max(len(items), 1))
        for i, (kind, start, stop, step) in enumerate(items):
            arr[i].kind, arr[i].start, arr[i].stop, arr[i].step = kind, start, stop, step
        out = ffi.new("dlpx_tensor **")
        rc = lib.dlpx_file_read_slice(self._live(), e.index, len(items), arr, flags, out)
        check(rc)
        return wrap(out[0])

    def close(self) -> None:
        h, self._h = self._h, None
        if h is not None:
            ffi.release(h)

    def __enter__(self) -> File:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_NONE = -(1 << 63)


def _bound(v: Any, what: str) -> int:
    if v is None:
        return _NONE
    try:
        return int(v.__index__())
    except AttributeError:
        raise TypeError(f"slice {what} must be an integer or None, not "
                        f"{type(v).__name__}") from None


def index_items(key: Any) -> list[tuple[int, int, int, int]]:
    """A NumPy basic index (ints, slices, Ellipsis, None, or a tuple of
    them) as dlpx_index items (kind, start, stop, step)."""
    if not isinstance(key, tuple):
        key = (key,)
    items = []
    for k in key:
        if k is Ellipsis:
            items.append((3, 0, 0, 0))
        elif k is None:
            items.append((2, 0, 0, 0))
        elif isinstance(k, slice):
            step = _bound(k.step, "step")
            if step == 0:
                raise ValueError("slice step cannot be zero")
            items.append((1, _bound(k.start, "start"), _bound(k.stop, "stop"), step))
        elif isinstance(k, bool):
            raise TypeError("boolean indices are not supported in slices of a file")
        elif hasattr(k, "__index__"):
            items.append((0, int(k.__index__()), 0, 0))
        else:
            raise TypeError(f"only integers, slices, ... and None index a slice of a file, "
                            f"not {type(k).__name__}")
    return items
