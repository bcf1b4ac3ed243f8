"""Tensors shared across processes, zero copy: :func:`share` copies a dict
of tensors once into a sealed shared-memory segment (libdlpx's
``dlpx_segment``, a safetensors image) and returns a :class:`Handle`;
:func:`attach` maps it in any process of the machine and gives back the
tensors without a copy.

A handle is small and picklable (multiprocessing with fork, spawn or
forkserver, concurrent.futures, Ray) and has a string form for processes
that share nothing (``str(handle)``, accepted by :func:`attach`).  Anonymous
segments (the default) are memfds, and other processes get the descriptor
from the producer over a Unix socket (SCM_RIGHTS): they need the producer
alive to attach, and nothing is ever left in /dev/shm.  Named segments
(``name=``) are files in /dev/shm that outlive the producer until
:func:`unlink` removes them (``dlpx shm list`` / ``dlpx shm rm``).

Consumers map the segment copy-on-write: tensors are read-only where the
framework has read-only tensors, and a consumer that writes anyway (PyTorch)
changes only its own pages, never what the others see.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from typing import Any, Callable, Mapping, Optional

from . import _convert
from ._errors import check
from ._files import METADATA_PREFIX, handle as _handle, wrap
from ._lib import ffi, lib, types

# The pointer types an attach allocates, taken from the functions that take
# them (parsing a type string costs a millisecond each, on first use).
_SEGMENT_P = ffi.typeof(lib.dlpx_segment_fetch).args[4]       # dlpx_segment **
_TENSOR_P = ffi.typeof(lib.dlpx_segment_bytes).args[2]        # dlpx_tensor **
_CSTR_P = ffi.typeof(lib.dlpx_st_header_metadata).args[2]     # const char **

__all__ = ["Handle", "share", "attach", "unlink", "list_named", "SEGMENT_DIR",
           "SEGMENT_PREFIX", "node_id"]

SEGMENT_DIR = "/dev/shm"
SEGMENT_PREFIX = "dlpx."
_ALIASES = METADATA_PREFIX + "aliases"
#: Segments keep every tensor 64-byte aligned with padding entries of bytes
#: "dlpx.pad.<k>", counted in __metadata__ under this key (the format has no
#: gaps); they are not tensors of the user's.
_PAD = METADATA_PREFIX + "pad"
_SCHEME = "dlpx-shm"
_VERSION = 1
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}\Z")
_ID_RE = re.compile(r"[0-9a-f]{32}\Z")
_ADDR_RE = re.compile(r"@[\x21-\x7e]{1,106}\Z")
_HOST_RE = re.compile(r"[0-9a-f-]{1,64}\Z")


def _read_boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


_BOOT_ID = _read_boot_id()

def node_id() -> str:
    """This machine as handles record it: the kernel's boot id (a memfd
    handle maps memory only where it was made)."""
    return _BOOT_ID


def _name_arg(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a segment name must be a str, not {type(name).__name__}")
    if not _NAME_RE.match(name):
        raise ValueError(f"bad segment name {name!r}: 1 to 200 characters of A-Z a-z 0-9 . _ -, "
                         "not starting with '.'")
    return name


def _strs(what: str, d: Mapping[Any, Any], values: bool) -> None:
    for k, v in d.items():
        if not isinstance(k, str):
            raise TypeError(f"{what} keys must be strings, not {type(k).__name__} ({k!r})")
        if values and not isinstance(v, str):
            raise TypeError(f"{what} values must be strings, not {type(v).__name__} (key {k!r})")
        if "\0" in k or (values and "\0" in v):
            raise ValueError(f"{what} key {k!r} or its value contains a NUL character")


def _encode(s: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{s!r} is not valid UTF-8 text ({e.reason})") from None


class Handle:
    """What a process needs to attach tensors another process shared: the
    segment's kind, id and size, where to get it (the producer's socket, or
    the name), and the node it lives on.  Picklable, and ``str(handle)``
    is a string form that :func:`attach` and :meth:`parse` take.

    The producer's own handle (from :func:`share`) also owns the segment:
    :meth:`close` (idempotent; also on leaving a ``with`` block) stops
    giving it out, and attached tensors stay valid.  Unpickled copies own
    nothing; their close() does nothing."""

    __slots__ = ("kind", "id", "size", "where", "node", "extra", "_seg", "_lock",
                 "__weakref__")

    def __init__(self, kind: str, id: str, size: int, where: str, node: str,
                 extra: Optional[dict[str, Any]] = None) -> None:
        self.kind = kind        # "memfd" or "named"
        self.id = id            # 32 hex digits
        self.size = size        # bytes of the image
        self.where = where      # the producer's socket address, or the segment's name
        self.node = node        # node_id() of the producer
        self.extra = extra or {}  # what engines add (dlpx.ray: the object store copy)
        self._seg: Any = None
        self._lock = threading.Lock()

    # ---- the string form and pickling --------------------------------------

    def __str__(self) -> str:
        return f"{_SCHEME}:{_VERSION}:{self.kind}:{self.id}:{self.size}:{self.node}:{self.where}"

    def __repr__(self) -> str:
        state = "" if self._seg is None else ", owner"
        return (f"dlpx.Handle({self.kind}, id={self.id}, {self.size} bytes, "
                f"{'name' if self.kind == 'named' else 'at'} {self.where}{state})")

    @classmethod
    def parse(cls, text: str) -> "Handle":
        """A handle from its string form; ValueError when it is not one."""
        if not isinstance(text, str):
            raise TypeError(f"a handle string must be a str, not {type(text).__name__}")
        parts = text.split(":", 6)
        if len(parts) != 7 or parts[0] != _SCHEME:
            raise ValueError(f"not a dlpx handle: {text[:120]!r} (expected "
                             f"'{_SCHEME}:{_VERSION}:KIND:ID:SIZE:NODE:WHERE')")
        _, version, kind, id, size, node, where = parts
        if version != str(_VERSION):
            raise ValueError(f"dlpx handle version {version[:20]!r}: this dlpx reads version "
                             f"{_VERSION}")
        if kind not in ("memfd", "named"):
            raise ValueError(f"dlpx handle: unknown kind {kind[:20]!r}")
        if not _ID_RE.match(id):
            raise ValueError(f"dlpx handle: bad segment id {id[:40]!r}")
        if not size.isascii() or not size.isdigit() or len(size) > 20 or int(size) < 8:
            raise ValueError(f"dlpx handle: bad size {size[:30]!r}")
        return _checked(kind, id, int(size), where, node, None)

    def __reduce__(self) -> Any:
        if self._seg is not None:
            _load_engines()
            for hook in _pickle_hooks:
                hook(self)
        return (_rebuild, (self.kind, self.id, self.size, self.where, self.node,
                           dict(self.extra)))

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Handle) and (self.kind, self.id, self.where) == (
            other.kind, other.id, other.where)

    def __hash__(self) -> int:
        return hash((self.kind, self.id, self.where))

    # ---- owning ----------------------------------------------------------------

    @property
    def owner(self) -> bool:
        """Whether this is the producer's handle, still open."""
        return self._seg is not None

    @property
    def closed(self) -> bool:
        return self._seg is None

    def close(self) -> None:
        """Stops giving the segment out (the producer's handle; idempotent).
        Processes that attached keep their tensors.  A named segment keeps
        its name: :meth:`unlink` removes it."""
        with self._lock:
            seg, self._seg = self._seg, None
        if seg is not None:
            for hook in _close_hooks:
                hook(self)
            ffi.release(seg)

    def unlink(self) -> None:
        """Removes a named segment's name (as :func:`unlink`)."""
        if self.kind != "named":
            raise ValueError("an anonymous segment has no name to unlink; close() it")
        unlink(self.where)

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def attach(self, framework: str = "dlpx") -> dict[str, Any]:
        """:func:`attach` of this handle."""
        return attach(self, framework)

    def metadata(self, *, timeout: float = 5.0) -> Optional[dict[str, str]]:
        """The metadata given to :func:`share` (dlpx's own keys left out),
        or None when it has none: read from the segment, as any consumer
        sees it."""
        seg = open_segment(self, timeout)
        try:
            _, meta = header_of(seg)
        finally:
            ffi.release(seg)
        user = {k: v for k, v in meta.items() if not k.startswith(METADATA_PREFIX)}
        return user or None


def _checked(kind: Any, id: Any, size: Any, where: Any, node: Any, extra: Any) -> Handle:
    """A handle of these fields, checked as :meth:`Handle.parse` checks its
    string form (a pickle is as untrusted as a string): ValueError when
    some field is not what a handle holds."""
    for what, v in (("kind", kind), ("id", id), ("where", where), ("node", node)):
        if not isinstance(v, str):
            raise ValueError(f"dlpx handle: the {what} is a {type(v).__name__}, not a str")
    if kind not in ("memfd", "named"):
        raise ValueError(f"dlpx handle: unknown kind {kind[:20]!r}")
    if not _ID_RE.match(id):
        raise ValueError(f"dlpx handle: bad segment id {id[:40]!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size < 2 ** 64:
        raise ValueError(f"dlpx handle: bad size {str(size)[:30]!r}")
    if not _HOST_RE.match(node) and node != _BOOT_ID:
        raise ValueError(f"dlpx handle: bad node {node[:70]!r}")
    if kind == "named":
        _name_arg(where)
    elif not _ADDR_RE.match(where):
        raise ValueError(f"dlpx handle: bad address {where[:120]!r}")
    if extra is not None and not isinstance(extra, dict):
        raise ValueError(f"dlpx handle: extra is a {type(extra).__name__}, not a dict")
    return Handle(kind, id, size, where, node, extra)


def _rebuild(kind: str, id: str, size: int, where: str, node: str,
             extra: dict[str, Any]) -> Handle:
    return _checked(kind, id, size, where, node, extra)


#: Hooks that engines (dlpx.ray) install.  (handle) -> None, run when a
#: producer's handle is pickled (to add what other nodes need to
#: handle.extra) or closed.
_pickle_hooks: list[Callable[[Handle], None]] = []
_close_hooks: list[Callable[[Handle], None]] = []
#: (handle) -> a segment pointer, or None when the handle's segment is on
#: this node (then it is attached as usual): how a handle from another node
#: is brought to this one.
_remote_hooks: list[Callable[[Handle], Any]] = []
_engines_tried = False


def _load_engines() -> None:
    """Imports dlpx.ray (which installs its hooks) once Ray is in this
    process, so that handles work in Ray tasks and actors without the user
    importing it; a dict lookup after the first call."""
    global _engines_tried
    if _engines_tried or "ray" not in sys.modules:
        return
    _engines_tried = True
    try:
        from . import ray  # noqa: F401
    except Exception:  # a broken Ray install never breaks share/attach
        pass


# ---- making segments -------------------------------------------------------------


def _views(tensors: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    from ._save import _host_view
    names = list(tensors)
    return names, [_host_view(n, tensors[n]) for n in names]


def create_segment(tensors: Mapping[str, Any], name: Optional[str],
                   metadata: Optional[Mapping[str, str]], checksum: bool, tied: str) -> Any:
    """A new segment (cffi pointer, closed when collected) holding |tensors|."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a dict of name -> tensor, not {type(tensors).__name__}")
    if tied not in ("error", "once"):
        raise ValueError(f"tied must be 'error' or 'once', not {tied!r}")
    if name is not None:
        _name_arg(name)
    _strs("tensor name", tensors, False)
    meta = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict of str -> str, not "
                            f"{type(metadata).__name__}")
        meta = dict(metadata)
        _strs("metadata", meta, True)
        for k in meta:
            if k.startswith(METADATA_PREFIX):
                raise ValueError(f"metadata key {k!r}: keys starting with {METADATA_PREFIX!r} "
                                 "are reserved for dlpx")
    names, views = _views(tensors)
    c_names = [ffi.new("char[]", _encode(n)) for n in names]
    c_keys = [ffi.new("char[]", _encode(k)) for k in meta]
    c_vals = [ffi.new("char[]", _encode(v)) for v in meta.values()]
    flags = ((lib.DLPX_SAVE_CHECKSUMS if checksum else 0)
             | (lib.DLPX_SAVE_ALIASES_ONCE if tied == "once" else 0)
             | (lib.DLPX_SAVE_METADATA if metadata is not None else 0))
    out = ffi.new(_SEGMENT_P)
    rc = lib.dlpx_segment_create(_encode(name) if name is not None else ffi.NULL, len(names),
                                 ffi.new("char *[]", c_names),
                                 ffi.new("dlpx_tensor *[]", [_handle(v) for v in views]),
                                 len(meta), ffi.new("char *[]", c_keys),
                                 ffi.new("char *[]", c_vals), flags, out)
    del views  # alive until the C call returned
    check(rc)
    return ffi.gc(out[0], lib.dlpx_segment_close)


def segment_handle(seg: Any) -> Handle:
    """The producer's handle of a new segment: published to other processes
    (anonymous) or by its name."""
    got = lib.dlpx_segment_id(seg)
    if got == ffi.NULL:
        raise ValueError("the image carries no dlpx segment id (it was not made by "
                         "dlpx.share): it cannot be handed out")
    sid = ffi.string(got).decode()
    size = int(lib.dlpx_segment_size(seg))
    cname = lib.dlpx_segment_name(seg)
    if cname != ffi.NULL:
        h = Handle("named", sid, size, ffi.string(cname).decode(), node_id())
    else:
        addr = ffi.new("char[]", int(lib.DLPX_SEGMENT_ADDRESS_MAX))
        check(lib.dlpx_segment_publish(seg, addr))
        h = Handle("memfd", sid, size, ffi.string(addr).decode(), node_id())
    h._seg = seg
    return h


def share(tensors: Mapping[str, Any], *, name: Optional[str] = None,
          metadata: Optional[Mapping[str, str]] = None, checksum: bool = False,
          tied: str = "once") -> Handle:
    """Copies a dict of name -> tensor (any host DLPack tensor: NumPy,
    PyTorch, JAX, dlpx; any layout) once into a new sealed shared-memory
    segment and returns its :class:`Handle`, which any process of this
    machine passes to :func:`attach` to get the tensors, zero copy.

    |name| makes a named segment (/dev/shm/dlpx.<name>) that outlives this
    process until :func:`unlink`; without it the segment is anonymous and
    lives while any process holds it.  Tensors that are the same view
    (tied weights) are stored once and attach as one tensor under every
    name (|tied| "error" refuses them instead).  |metadata| (str -> str)
    travels in the image; |checksum| stores XXH3 checksums of each tensor.
    Close the handle (or use ``with``) to stop giving the segment out."""
    return segment_handle(create_segment(tensors, name, metadata, checksum, tied))


def build_segment(size: int, name: Optional[str] = None) -> tuple[Any, memoryview]:
    """An unfilled segment of |size| bytes and a writable memoryview of it,
    for images that arrive as bytes (MPI, Ray): fill the view with a whole
    safetensors image, drop the view, then :func:`seal_segment`."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"a segment image has at least 8 bytes, not {size!r}")
    if name is not None:
        _name_arg(name)
    data = ffi.new(ffi.typeof(lib.dlpx_segment_build).args[2])  # void **
    out = ffi.new(_SEGMENT_P)
    check(lib.dlpx_segment_build(_encode(name) if name is not None else ffi.NULL, size, data,
                                 out))
    seg = ffi.gc(out[0], lib.dlpx_segment_close)
    return seg, memoryview(ffi.buffer(data[0], size))  # type: ignore[arg-type]


def seal_segment(seg: Any, view: memoryview) -> Handle:
    """Seals a segment of :func:`build_segment` (validating its image as
    any reader does) and returns the producer's handle of it.  |view|, the
    memoryview build_segment gave, is released; memory it lent out before
    (NumPy's frombuffer keeps no export) stays readable while the segment
    is open, and writes to it no longer reach the segment."""
    view.release()
    check(lib.dlpx_segment_seal(seg))
    return segment_handle(seg)


# ---- attaching -------------------------------------------------------------------


def _handle_arg(h: Any) -> Handle:
    if isinstance(h, Handle):
        return h
    if isinstance(h, str):
        return Handle.parse(h)
    raise TypeError(f"expected a dlpx.Handle or its string form, not {type(h).__name__}")


def _check_segment(seg: Any, h: Handle) -> None:
    got = lib.dlpx_segment_id(seg)
    sid = ffi.string(got).decode() if got != ffi.NULL else None
    if sid != h.id:
        raise ValueError(f"stale handle: segment {h.where} is now another segment (id {sid}, "
                         f"the handle names {h.id})")
    size = int(lib.dlpx_segment_size(seg))
    if size != h.size:
        raise ValueError(f"segment {h.id} has {size} bytes, the handle says {h.size}: "
                         "a forged or damaged handle")


def open_segment(h: Handle, timeout: float = 5.0) -> Any:
    """The segment of |h| in this process (a cffi pointer that the caller
    releases), from the producer's own segment, by name, from the producer
    over its socket, or through an engine's hook from another node."""
    seg = None
    fd = -1
    with h._lock:  # close() in another thread must not free the segment under us
        own = h._seg
        if own is not None:
            fd = os.dup(lib.dlpx_segment_fd(own))
    if own is not None:
        try:
            out = ffi.new(_SEGMENT_P)
            check(lib.dlpx_segment_attach_fd(fd, 0, out))
        finally:
            os.close(fd)
        seg = ffi.gc(out[0], lib.dlpx_segment_close)
    else:
        _load_engines()
        for hook in _remote_hooks:
            seg = hook(h)
            if seg is not None:
                break
    if seg is None:
        if h.node != _BOOT_ID:
            raise OSError(f"the segment {h.id} is on another machine (boot id {h.node}; this "
                          f"is {_BOOT_ID}): a handle maps memory on its own machine only; "
                          "share it through dlpx.ray or dlpx.mpi to reach other machines")
        out = ffi.new(_SEGMENT_P)
        if h.kind == "named":
            check(lib.dlpx_segment_open(_encode(h.where), 0, out))
            seg = ffi.gc(out[0], lib.dlpx_segment_close)
        else:
            ms = max(1, int(min(timeout * 1000, 2 ** 32 - 1)))
            check(lib.dlpx_segment_fetch(_encode(h.where), _encode(h.id), ms, 0, out))
            seg = ffi.gc(out[0], lib.dlpx_segment_close)
    try:
        _check_segment(seg, h)
    except BaseException:
        ffi.release(seg)
        raise
    return seg


def header_of(seg: Any) -> tuple[list[tuple[str, int, tuple[int, ...], int, int]],
                                   dict[str, str]]:
    """The tensors (name, dtype as code | bits << 8 | lanes << 16, shape,
    begin, end) in data order, padding left out, and the __metadata__ of a
    validated segment, read from libdlpx's flat table of the header it
    validated in a few calls (a call per tensor would cost more than the
    rest of an attach)."""
    entries, _, meta = _table(seg)
    return entries, meta


def _table(seg: Any) -> tuple[list[tuple[str, int, tuple[int, ...], int, int]], list[int],
                              dict[str, str]]:
    """:func:`header_of`, and the index in the header of each entry."""
    header = lib.dlpx_segment_header(seg)
    meta: dict[str, str] = {}
    m = lib.dlpx_st_header_metadata_count(header)
    if m:
        k = ffi.new(_CSTR_P)
        v = ffi.new(_CSTR_P)
        for i in range(m):
            check(lib.dlpx_st_header_metadata(header, i, k, v))
            meta[ffi.string(k[0]).decode("utf-8")] = ffi.string(v[0]).decode("utf-8")
    tb = lib.dlpx_st_header_table(header)
    n = int(tb.count)
    if not n:
        return [], [], meta
    # one decode for every name: a NUL is never part of another UTF-8 character
    names = ffi.buffer(tb.names, tb.names_len)[:].decode("utf-8").split("\0")
    ndims = ffi.unpack(tb.ndims, n)
    flat = ffi.unpack(tb.shapes, sum(ndims))
    dtypes = ffi.unpack(tb.dtypes, n)
    begins = ffi.unpack(tb.begins, n)
    ends = ffi.unpack(tb.ends, n)
    pads = set(_pads(meta))
    entries = []
    index = []
    at = 0
    for i in range(n):
        d = ndims[i]
        name = names[i]
        if name not in pads:
            entries.append((name, dtypes[i], tuple(flat[at:at + d]), begins[i], ends[i]))
            index.append(i)
        at += d
    return entries, index, meta


def _pads(meta: dict[str, str]) -> list[str]:
    raw = meta.get(_PAD)
    if raw is None:
        return []
    if not raw.isdigit() or len(raw) > 9:
        raise ValueError(f"the segment's {_PAD} metadata is malformed")
    return [f"{_PAD}.{k}" for k in range(int(raw))]


def _aliases(meta: dict[str, str], names: set[str]) -> dict[str, str]:
    raw = meta.get(_ALIASES)
    if raw is None:
        return {}
    try:
        got = json.loads(raw)
    except ValueError:
        got = None
    if not isinstance(got, dict) or not all(
            isinstance(a, str) and isinstance(b, str) and b in names and a not in names
            for a, b in got.items()):
        raise ValueError(f"the segment's {_ALIASES} metadata is malformed")
    return got


#: What attaching a segment's tensors takes that depends on its header
#: alone, kept for the next attach of the same segment in this process (a
#: worker that loads the same model again): (framework, segment id, size) ->
#: (the header's bytes as libdlpx validated them, the plan), used only when
#: the new attach's header is byte for byte the same.
_PLANS: dict[tuple[str, bytes, int], tuple[bytes, Any]] = {}
_PLANS_MAX = 32


def _plan(seg: Any, framework: str) -> tuple[Any, ...]:
    """How to make |seg|'s tensors as |framework| tensors: ("typed", flags,
    typed_plan, aliases) or ("each", flags, entries in the header, (index,
    name) of each tensor that is not padding, aliases)."""
    entries, index, meta = _table(seg)
    aliases = tuple(_aliases(meta, {e[0] for e in entries}).items())
    flags = lib.DLPX_READ_COPY_ON_WRITE if _convert.writable_views(framework) else 0
    if _convert.typed_views_for(framework) and entries:
        typed = _convert.typed_plan(entries, framework)
        if typed is not None:
            return ("typed", flags, typed, aliases)
    n = int(lib.dlpx_st_header_count(lib.dlpx_segment_header(seg)))
    return ("each", flags, n, tuple(zip(index, (e[0] for e in entries))), aliases)


def _header_bytes(seg: Any) -> Optional[bytes]:
    n = ffi.new(types.size_t_p)
    p = lib.dlpx_segment_header_json(seg, n)
    return None if p == ffi.NULL else ffi.buffer(p, n[0])[:]


def tensors_of(seg: Any, framework: str) -> dict[str, Any]:
    """Every tensor of |seg| as |framework| tensors, zero copy, aliases
    restored (one tensor under each of its names)."""
    sid = lib.dlpx_segment_id(seg)
    key = (framework, ffi.string(sid) if sid != ffi.NULL else b"",
           int(lib.dlpx_segment_size(seg)))
    hb = _header_bytes(seg)
    got = _PLANS.get(key)
    if got is not None and hb is not None and got[0] == hb:
        plan = got[1]
    else:
        plan = _plan(seg, framework)
        if hb is not None:
            while len(_PLANS) >= _PLANS_MAX:
                try:
                    del _PLANS[next(iter(_PLANS))]
                except (KeyError, RuntimeError, StopIteration):  # another thread's
                    break
            _PLANS[key] = (hb, plan)
    flags = plan[1]
    out: dict[str, Any]
    if plan[0] == "typed":
        b = ffi.new(_TENSOR_P)
        check(lib.dlpx_segment_bytes(seg, flags, b))
        out = _convert.typed_cut(wrap(b[0]), plan[2])
    else:
        out = {}
        n = plan[2]
        if n:
            buf = ffi.new(types.char_array, n * ffi.sizeof(_TENSOR_P.item))  # n pointers
            arr = ffi.cast(_TENSOR_P, buf)
            check(lib.dlpx_segment_tensors(seg, flags, arr))
            ts = [wrap(arr[i]) for i in range(n)]
            if framework == "dlpx":
                for i, name in plan[3]:
                    out[name] = ts[i]
            else:
                for i, name in plan[3]:
                    out[name] = _convert.to_framework(ts[i], framework)
    for alias, name in plan[-1]:
        out[alias] = out[name]
    return out


def attach(handle: Any, framework: str = "dlpx", *, timeout: float = 5.0) -> dict[str, Any]:
    """The tensors of a shared segment (a :class:`Handle` or its string
    form), zero copy: a dict of name -> tensor of |framework| (dlpx, numpy
    or np, torch or pt, jax), in the order of the segment's data.

    The segment is mapped copy-on-write: tensors are read-only where the
    framework has read-only tensors (dlpx, NumPy); PyTorch's are writable
    and their writes stay in this process.  Raises FileNotFoundError when
    the producer is gone (anonymous) or the name does not exist, ValueError
    for a stale, forged or damaged handle or segment, OSError when the
    exchange with the producer fails or the segment is on another node."""
    from ._convert import framework_arg
    fw = framework_arg(framework)
    h = _handle_arg(handle)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    seg = open_segment(h, float(timeout))
    try:
        return tensors_of(seg, fw)
    finally:
        ffi.release(seg)  # the tensors hold the mapping


# ---- named segments ----------------------------------------------------------------


def unlink(name: str) -> None:
    """Removes the named segment |name| (/dev/shm/dlpx.<name>); processes
    that attached it keep their tensors.  FileNotFoundError if it is not
    there."""
    _name_arg(name)
    check(lib.dlpx_segment_unlink(_encode(name)))


def list_named() -> list[dict[str, Any]]:
    """dlpx's named segments in /dev/shm: name, bytes, owner uid, and
    whether a killed producer left it half made (a temporary file)."""
    out: list[dict[str, Any]] = []
    try:
        names = sorted(os.listdir(SEGMENT_DIR))
    except OSError:
        return out
    for f in names:
        if not f.startswith(SEGMENT_PREFIX):
            continue
        try:
            st = os.lstat(os.path.join(SEGMENT_DIR, f))
        except OSError:
            continue
        name = f[len(SEGMENT_PREFIX):]
        out.append({"name": name, "file": os.path.join(SEGMENT_DIR, f), "bytes": st.st_size,
                    "uid": st.st_uid, "partial": ".tmp-" in name})
    return out

