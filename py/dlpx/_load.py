"""Loading safetensors files: :func:`load_file` (one file, a sharded
checkpoint's index, or a list of shards) in four modes, :func:`load_into`
existing tensors, :func:`load` from bytes, and :func:`safe_open`.

Modes
  ``"mmap"``    read-only views over one shared mapping of each file, zero
                copy (PyTorch, which has no read-only tensors, gets views over
                a private copy-on-write mapping: writes stay in the process).
  ``"pread"``   new owned memory, filled by several threads in large pieces.
  ``"direct"``  as pread, with O_DIRECT reads (no page cache); where the file
                system refuses O_DIRECT the reads fall back to pread and
                :func:`direct_available` says so.
Checksums (``verify=None``): checked while the bytes stream in pread and
direct modes and by load_into when the file has them; mmap checks only on
request (``verify=True``, which reads every page).  ``verify=True`` on a file
without checksums is a ValueError; ``verify=False`` skips them.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, Optional, Sequence

from . import _cuda, _quirks
from ._convert import exportable, is_readonly_numpy
from ._files import Entry, File, convert, framework_arg, path_arg
from ._remote import is_url
from ._lib import ffi, lib

__all__ = ["load_file", "load_into", "load", "safe_open", "direct_available", "MODES",
           "DEFAULT_THREADS", "DEFAULT_CHUNK_SIZE", "shard_paths"]

MODES = ("mmap", "pread", "direct")

#: Reader threads of pread/direct/into loads (I/O bound: more than cores helps
#: on storage with deep queues; page faults bound them on warm caches).
DEFAULT_THREADS = max(2, min(8, os.cpu_count() or 2))

#: Bytes per read call: the checksum chunk, so each piece is verified alone.
DEFAULT_CHUNK_SIZE = int(lib.DLPX_CHECKSUM_CHUNK)


def _mode_arg(mode: Any) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, not {mode!r}")
    return str(mode)


_HOST = _cuda.device_arg("cpu")


def _device_arg(device: Any) -> Any:
    """None for the host, or the CUDA Device to load into ("cuda",
    "cuda:1", a Device, a torch.device, an int as safetensors takes it)."""
    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"
    dev = _cuda.device_arg("cpu" if device is None else device)
    if dev is None or dev == _HOST:
        return None
    if dev.device_type not in (lib.kDLCUDA, lib.kDLCUDAManaged):
        raise ValueError(f"device {device!r}: tensor files load into host memory ('cpu') or a "
                         "CUDA device ('cuda:N')")
    return dev


def _threads_arg(threads: Any) -> int:
    if threads is None:
        return DEFAULT_THREADS
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, not {threads!r}")
    return threads


def _chunk_arg(chunk_size: Any, verify: bool) -> int:
    if chunk_size is None:
        return DEFAULT_CHUNK_SIZE
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 4096:
        raise ValueError(f"chunk_size must be an int of at least 4096 bytes, not {chunk_size!r}")
    if verify:  # pieces on checksum boundaries, so that every piece is checked
        chunk_size = max(1, round(chunk_size / DEFAULT_CHUNK_SIZE)) * DEFAULT_CHUNK_SIZE
    return int(chunk_size)


def _verify_for(f: File, verify: Any, default: bool) -> bool:
    if verify is None:
        return default and f.has_checksums
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True, False or None, not {verify!r}")
    if verify and not f.has_checksums:
        raise ValueError(f"{f.path} has no dlpx checksums to verify (it was not saved by "
                         "dlpx with checksum=True); pass verify=None or verify=False")
    return verify


# ---- shards -------------------------------------------------------------------


def shard_paths(filename: Any) -> tuple[list[str], Optional[dict[str, str]]]:
    """The files of a checkpoint: one file, the shards a
    ``*.safetensors.index.json`` names (with its weight_map), or a list."""
    if isinstance(filename, (list, tuple)):
        paths = [path_arg(p) for p in filename]
        if not paths:
            raise ValueError("an empty list of files")
        if len(set(map(os.path.realpath, paths))) != len(paths):
            raise ValueError("a file is listed twice")
        return paths, None
    path = path_arg(filename)
    if is_url(path) or not path.endswith(".json"):
        return [path], None
    with open(path, encoding="utf-8") as fp:
        try:
            index = json.load(fp)
        except ValueError as e:
            raise ValueError(f"{path}: not a valid index ({e})") from None
    wm = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wm, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
        raise ValueError(f"{path}: an index needs a \"weight_map\" of tensor names to files")
    base = os.path.dirname(path)
    files = []
    for v in wm.values():
        norm = os.path.normpath(v)
        if os.path.isabs(v) or norm == os.pardir or norm.startswith(os.pardir + os.sep):
            raise ValueError(f"{path}: shard {v!r} is outside the index's directory")
        if v not in files:
            files.append(v)
    return [os.path.join(base, v) for v in files], {k: os.path.join(base, v) for k, v in wm.items()}


def _open_all(paths: Sequence[str], direct: bool, threads: int,
              storage_options: Optional[dict[str, Any]] = None) -> list[File]:
    if len(paths) == 1:
        return [File(paths[0], direct, _options_for(paths[0], storage_options))]
    with ThreadPoolExecutor(min(threads, len(paths))) as pool:
        futures = [pool.submit(File, p, direct, _options_for(p, storage_options))
                   for p in paths]
        files, err = [], None
        for fu in futures:
            try:
                files.append(fu.result())
            except BaseException as e:  # keep the first, close what opened
                err = err or e
        if err is not None:
            for f in files:
                f.close()
            raise err
    return files


def _options_for(path: str, storage_options: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The storage options for one of the files (URLs take them; local
    files of a list with URLs ignore them)."""
    if storage_options is not None and not isinstance(storage_options, dict):
        raise TypeError(f"storage_options must be a dict, not {type(storage_options).__name__}")
    return storage_options if is_url(path) else None


def _plan(files: list[File], weight_map: Optional[dict[str, str]]) -> list[tuple[File, Entry]]:
    seen: dict[str, str] = {}
    plan = []
    for f in files:
        for e in f.entries:
            if e.name in seen:
                raise ValueError(f"tensor {e.name!r} is in both {seen[e.name]} and {f.path}")
            seen[e.name] = f.path
            plan.append((f, e))
    if weight_map is not None:
        for name, where in weight_map.items():
            got = seen.get(name)
            if got is None or os.path.realpath(got) != os.path.realpath(where):
                raise ValueError(f"the index places tensor {name!r} in {where}, but "
                                 f"{'it is not there' if got is None else 'it is in ' + got}")
    return plan


# ---- parallel reads ---------------------------------------------------------------


class _Reader:
    """Reads (file, entry, address) jobs on a pool of threads: large tensors
    in pieces of |chunk| bytes, runs of small ones (under SMALL_TENSOR) in
    one call each (dlpx_file_read_many), as their reads cost less than the
    calls."""

    def __init__(self, threads: int, chunk: int, flags: int) -> None:
        self.threads, self.chunk, self.flags = threads, chunk, flags

    def pieces(self, jobs: Iterable[tuple[File, Entry, int]]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        run: Optional[tuple[File, list[Entry], list[int]]] = None
        size = 0
        for f, e, addr in jobs:
            n = e.nbytes
            if n < SMALL_TENSOR:
                if run is None or run[0] is not f or size >= SMALL_RUN:
                    run = (f, [], [])
                    size = 0
                    out.append(("many",) + run)
                run[1].append(e)
                run[2].append(addr)
                size += n
                continue
            for b in range(0, n, self.chunk):
                out.append(("range", f, e, b, min(n, b + self.chunk), addr))
        return out  # in file order, which readahead likes

    def _do(self, job: tuple[Any, ...]) -> None:
        if job[0] == "many":
            job[1].read_many(job[2], job[3], self.flags)
        else:
            _, f, e, b, end, addr = job
            f.read_range(e, b, end, addr + b, self.flags)

    def run(self, jobs: Iterable[tuple[File, Entry, int]]) -> None:
        local = []
        remote: dict[int, tuple[File, list[Entry], list[int]]] = {}
        for job in jobs:
            if job[0].remote:  # one call per file: libdlpx runs the GETs concurrently
                got = remote.setdefault(id(job[0]), (job[0], [], []))
                got[1].append(job[1])
                got[2].append(job[2])
            else:
                local.append(job)
        for f, entries, addresses in remote.values():
            f.read_many(entries, addresses, self.flags & ~lib.DLPX_READ_DIRECT)
        work = self.pieces(local)
        if not work:
            return
        if self.threads == 1 or len(work) == 1:
            for job in work:
                self._do(job)
            return
        it = iter(work)
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker() -> None:
            while not errors:
                with lock:
                    job = next(it, None)
                if job is None:
                    return
                try:
                    self._do(job)
                except BaseException as exc:
                    errors.append(exc)
                    return

        ts = [threading.Thread(target=worker, daemon=True)
              for _ in range(min(self.threads, len(work)) - 1)]
        for t in ts:
            t.start()
        worker()
        for t in ts:
            t.join()
        if errors:
            raise errors[0]


def _flags(verify: bool, direct: bool) -> int:
    return (lib.DLPX_READ_VERIFY if verify else 0) | (lib.DLPX_READ_DIRECT if direct else 0)


#: Tensors below this size share blocks of memory of up to SMALL_BLOCK
#: bytes (one allocation and few page faults for many small tensors; a block
#: lives while any of its tensors does, as one bytes object holds a whole
#: file in safetensors' loaders).
SMALL_TENSOR = 1 << 20
SMALL_BLOCK = 32 << 20
#: Bytes of small tensors read by one call (several calls keep every reader
#: thread busy).
SMALL_RUN = 4 << 20


def _allocation_groups(plan: list[tuple[File, Entry]]) -> Iterator[tuple[File, list[Entry]]]:
    small: dict[int, tuple[File, list[Entry], list[int]]] = {}
    for f, e in plan:
        if e.nbytes >= SMALL_TENSOR:
            yield f, [e]
            continue
        got = small.setdefault(id(f), (f, [], [0]))
        got[1].append(e)
        got[2][0] += e.nbytes + 64
        if got[2][0] >= SMALL_BLOCK:
            yield f, got[1]
            del small[id(f)]
    for f, group, _ in small.values():
        yield f, group


def _load_entries(plan: list[tuple[File, Entry]], mode: str, verify: Any, framework: str,
                  threads: int, chunk_size: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if mode == "mmap":
        writable = _quirks.writable_file_views(framework)
        remote = [(f, e) for f, e in plan if f.remote]  # not mappable: read
        for f, e in plan:
            if not f.remote:
                out[e.name] = f.map(e, _verify_for(f, verify, False), writable)
        if remote:
            out.update(_load_entries(remote, "pread", verify, framework, threads, chunk_size))
    else:
        direct = mode == "direct"
        jobs: dict[bool, list[tuple[File, Entry, int]]] = {True: [], False: []}
        for f, group in _allocation_groups(plan):
            ts = f.empty_many(group) if len(group) > 1 else [f.empty(group[0])]
            for e, t in zip(group, ts):
                out[e.name] = t
                if e.nbytes:
                    jobs[_verify_for(f, verify, True)].append((f, e, t.data_ptr))
        for v, js in jobs.items():
            if js:
                _Reader(threads, _chunk_arg(chunk_size, v), _flags(v, direct)).run(js)
    return out


def _finish(out: dict[str, Any], files: list[File], framework: str) -> dict[str, Any]:
    for f in files:
        for alias, name in f.aliases.items():
            if alias in out:
                raise ValueError(f"tensor {alias!r} is both stored and an alias")
            out[alias] = out[name]
    if framework == "dlpx":
        return dict(sorted(out.items()))
    conv: dict[int, Any] = {}  # an alias converts once: tied tensors stay one
    res = {}
    for name in sorted(out):
        t = out[name]
        got = conv.get(id(t))
        if got is None:
            got = conv[id(t)] = convert(t, framework)
        res[name] = got
    return res


def load_file(filename: Any, device: Any = "cpu", *, mode: str = "mmap", verify: Any = None,
              framework: str = "dlpx", threads: Optional[int] = None,
              chunk_size: Optional[int] = None,
              storage_options: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Loads every tensor of a safetensors file (or of a sharded checkpoint:
    a ``*.safetensors.index.json`` or a list of shard files, read in
    parallel) into a dict of name -> tensor of |framework| (dlpx, numpy or
    np, torch or pt, jax: the keys of dlpx._convert.FRAMEWORKS), converted
    through DLPack without a copy where the framework allows it.

    |mode| "mmap" (zero copy), "pread" or "direct" (see the module's help);
    |verify| None (checksums where the mode streams), True or False;
    |threads| and |chunk_size| (bytes per read, default 16 MiB) tune the
    parallel reads.  |filename| may be an ``http://``, ``https://`` or
    ``s3://`` URL (or a list of them): the header comes with one small
    request, the tensors by concurrent ranged GETs straight into their
    memory, checked as they arrive; |storage_options| (see
    :mod:`dlpx.remote`) says how to reach it.  Raises OSError (missing or
    unreadable files; FileNotFoundError, PermissionError and TimeoutError
    for URLs), ValueError (a malformed file, a checksum mismatch naming the
    tensor)."""
    mode = _mode_arg(mode)
    fw = framework_arg(framework)
    dev = _device_arg(device)
    threads = _threads_arg(threads)
    _chunk_arg(chunk_size, False)
    paths, weight_map = shard_paths(filename)
    files = _open_all(paths, mode == "direct", threads, storage_options)
    try:
        plan = _plan(files, weight_map)
        if dev is not None:  # straight to the GPU through pinned buffers
            stream = _cuda.stream_arg(None, dev.device_id)
            out: dict[str, Any] = {}
            for f in files:
                entries = [e for g, e in plan if g is f]
                got = f.load_device(entries, dev, stream, _verify_for(f, verify, True), threads)
                out.update(zip((e.name for e in entries), got))
            return _finish(out, files, fw)
        out = _load_entries(plan, mode, verify, fw, threads, chunk_size)
        if mode == "direct":
            _say_fallback(files)
        return _finish(out, files, fw)
    finally:
        for f in files:
            f.close()


def _say_fallback(files: list[File]) -> None:
    """Warns (RuntimeWarning) about files whose file system refused O_DIRECT,
    which were therefore read through the page cache."""
    slow = [f.path for f in files if not f.direct_now()]
    if slow:
        warnings.warn(f"O_DIRECT is not available for {', '.join(slow)}: read through the "
                      "page cache instead (mode='pread')", RuntimeWarning, stacklevel=3)


def direct_available(filename: Any) -> bool:
    """Whether the file system of |filename| (a safetensors file) accepts
    O_DIRECT reads; where it does not, mode="direct" reads as pread."""
    with File(filename, direct=True) as f:
        return f.direct


# ---- into existing tensors ---------------------------------------------------------


def _targets(tensors: Any) -> dict[str, Any]:
    sd = getattr(tensors, "state_dict", None)
    if callable(sd) and not isinstance(tensors, dict):
        got = sd()
    else:
        got = tensors
    if not hasattr(got, "items"):
        raise TypeError("load_into needs a dict of name -> tensor, or an object with "
                        f"state_dict() (a torch.nn.Module), not {type(tensors).__name__}")
    return dict(got.items())


def _writable_view(name: str, t: Any) -> Any:
    from ._consume import from_dlpack
    from ._tensor import Tensor
    if isinstance(t, Tensor):
        return t
    if is_readonly_numpy(t):
        raise ValueError(f"tensor {name!r}: the NumPy array is read-only")
    t = exportable(t)
    try:
        return from_dlpack(t, copy=False)
    except (BufferError, TypeError) as e:
        raise TypeError(f"tensor {name!r} cannot be loaded into in place: {e}") from None


def load_into(filename: Any, tensors: Any, *, strict: bool = True, verify: Any = None,
              threads: Optional[int] = None, chunk_size: Optional[int] = None,
              direct: bool = False,
              storage_options: Optional[dict[str, Any]] = None) -> tuple[list[str], list[str]]:
    """Reads the tensors of |filename| (a file, an index or a list of
    shards) straight into the existing tensors |tensors| (a dict of name ->
    any writable DLPack host tensor, or an object with ``state_dict()``
    such as a ``torch.nn.Module``, whose parameters and buffers are filled
    in place), with no intermediate buffer.  Each tensor must have the
    file's dtype and shape.  Returns (missing, unexpected): names of
    |tensors| not in the file, and of the file not in |tensors|; with
    |strict| either is a ValueError naming them, raised before anything is
    read."""
    threads = _threads_arg(threads)
    targets = _targets(tensors)
    paths, weight_map = shard_paths(filename)
    files = _open_all(paths, direct, threads, storage_options)
    try:
        plan = _plan(files, weight_map)
        by_name = {e.name: (f, e) for f, e in plan}
        for f in files:
            for alias, name in f.aliases.items():
                by_name[alias] = (f, f.by_name[name])
        missing = sorted(set(targets) - set(by_name))
        unexpected = sorted(set(by_name) - set(targets))
        if strict and (missing or unexpected):
            raise ValueError("the tensors do not match the file: "
                             + "; ".join(p for p in (
                                 f"missing from the file: {', '.join(missing)}" if missing else "",
                                 f"not expected: {', '.join(unexpected)}" if unexpected else "")
                                 if p))
        views = {}
        for name, t in targets.items():
            if name in by_name:
                views[name] = _writable_view(name, t)
        jobs: dict[bool, list[tuple[File, Entry, int]]] = {True: [], False: []}
        strided = []
        done: dict[tuple[int, int], list[Any]] = {}
        for name, v in views.items():
            f, e = by_name[name]
            _check_target(f, e, name, v)
            filled = done.setdefault((id(f), e.index), [])
            if any(w.data_ptr == v.data_ptr and w.strides == v.strides for w in filled):
                continue  # a tied tensor, the same memory as one filled already
            filled.append(v)
            ver = _verify_for(f, verify, True)
            if v.is_contiguous() and e.nbytes and v.nbytes == e.nbytes:
                jobs[ver].append((f, e, v.data_ptr))
            elif e.nbytes:
                strided.append((f, e, v, ver))
        for ver, js in jobs.items():
            if js:
                _Reader(threads, _chunk_arg(chunk_size, ver), _flags(ver, direct)).run(js)
        for f, e, v, ver in strided:
            f.read_into(e, v, _flags(ver, direct))
        return missing, unexpected
    finally:
        for f in files:
            f.close()


def _check_target(f: File, e: Entry, name: str, v: Any) -> None:
    if v.device.device_type != lib.kDLCPU:
        raise ValueError(f"tensor {name!r} is not in host memory")
    if v.readonly:
        raise ValueError(f"tensor {name!r} is read-only")
    if v.dtype != e.dtype:
        raise TypeError(f"tensor {name!r}: the file has {e.dtype.name}, the tensor "
                        f"{v.dtype.name}")
    if tuple(v.shape) != e.shape:
        raise ValueError(f"tensor {name!r}: the file has shape {e.shape}, the tensor "
                         f"{tuple(v.shape)}")


# ---- from bytes ------------------------------------------------------------------------


def load(data: Any, *, framework: str = "dlpx") -> dict[str, Any]:
    """The tensors of a safetensors file held in memory (bytes or any
    buffer), as views of that buffer where the framework allows it."""
    from ._create import empty, frombuffer
    fw = framework_arg(framework)
    mv = memoryview(data).cast("B")
    if len(mv) < 8:
        raise ValueError(f"{len(mv)} bytes is too short for a safetensors file")
    n = int.from_bytes(mv[:8], "little")
    if n == 0:
        raise ValueError('the header length is 0 (a header is at least "{}")')
    if n > lib.DLPX_ST_HEADER_MAX:
        raise ValueError(f"the header length {n} exceeds the limit of {lib.DLPX_ST_HEADER_MAX} "
                         "bytes")
    if n > len(mv) - 8:
        raise ValueError(f"the header length {n} runs past the end of the data ({len(mv)} "
                         "bytes): it is truncated or not a safetensors file")
    out = ffi.new("dlpx_st_header **")
    raw = bytes(mv[8:8 + n])
    rc = lib.dlpx_st_header_parse(raw, n, len(mv) - 8 - n, out)
    if rc:
        from ._errors import message
        raise ValueError(message())
    h = ffi.gc(out[0], lib.dlpx_st_header_free)
    res: dict[str, Any] = {}
    for i in range(lib.dlpx_st_header_count(h)):
        e = Entry(i, lib.dlpx_st_header_entry(h, i))
        numel = 1
        for d in e.shape:
            numel *= d
        if numel == 0:
            t = empty(e.shape, e.dtype)
        else:
            t = frombuffer(mv, dtype=e.dtype, count=numel, offset=8 + n + e.begin)
            t = t.reshape(e.shape)
        res[e.name] = t
    return {k: convert(v, fw) for k, v in sorted(res.items())}


# ---- safe_open ---------------------------------------------------------------------------


class _Slice:
    """One tensor of an open file, to be read in part: ``get_shape()``,
    ``get_dtype()`` (the safetensors name) and ``[...]`` (NumPy basic
    indexing; only the bytes the selection needs are read)."""

    def __init__(self, owner: safe_open, entry: Entry) -> None:
        self._owner, self._e = owner, entry

    def get_shape(self) -> list[int]:
        return list(self._e.shape)

    def get_dtype(self) -> str:
        return str(self._e.st_dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._e.shape

    @property
    def dtype(self) -> Any:
        return self._e.dtype

    def __len__(self) -> int:
        if not self._e.shape:
            raise TypeError("len() of a 0-d tensor")
        return int(self._e.shape[0])

    def __getitem__(self, key: Any) -> Any:
        o = self._owner
        f = o._file_live()
        t = f.read_slice(self._e, key, _flags(o._verify, o._mode == "direct"))
        return convert(t, o._framework)

    def __repr__(self) -> str:
        return f"<dlpx slice of {self._e.name!r}: {self._e.st_dtype} {list(self._e.shape)}>"


class safe_open:
    """An open safetensors file, as ``safetensors.safe_open``:

        with dlpx.safe_open("model.safetensors", framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
            part = f.get_slice("embed")[:, :1024]

    |mode| as for :func:`load_file` ("mmap" default), |verify| likewise.
    Tensors already returned stay valid after close()."""

    def __init__(self, filename: Any, framework: str = "dlpx", device: Any = "cpu", *,
                 mode: str = "mmap", verify: Any = None,
                 storage_options: Optional[dict[str, Any]] = None) -> None:
        self._framework = framework_arg(framework)
        self._mode = _mode_arg(mode)
        self._device = _device_arg(device)
        path = path_arg(filename)
        self._file: Optional[File] = File(path, direct=self._mode == "direct",
                                          storage_options=_options_for(path, storage_options))
        if self._file.remote and self._mode != "pread":
            self._mode = "pread"  # a URL cannot be mapped: its tensors are read
        self._verify_arg = verify
        try:
            self._verify = _verify_for(self._file, verify, self._mode != "mmap")
            if self._mode == "direct":
                _say_fallback([self._file])
            self._slice_verify = self._verify
        except BaseException:
            self._file.close()
            raise

    def _file_live(self) -> File:
        if self._file is None or self._file.closed:
            raise ValueError("I/O operation on a closed safe_open")
        return self._file

    def keys(self) -> list[str]:
        """Tensor names, sorted."""
        return self._file_live().names()

    def offset_keys(self) -> list[str]:
        """Tensor names in the order of their data in the file."""
        return [e.name for e in self._file_live().entries]

    def metadata(self) -> Optional[dict[str, str]]:
        """The file's __metadata__ (dlpx's own keys left out), or None."""
        return self._file_live().metadata()

    def get_tensor(self, name: str) -> Any:
        f = self._file_live()
        e = f.entry(name)
        if self._device is not None:
            dev = self._device
            t = f.load_device([e], dev, _cuda.stream_arg(None, dev.device_id),
                              _verify_for(f, self._verify_arg, True))[0]
        elif self._mode == "mmap":
            t = f.map(e, self._verify, _quirks.writable_file_views(self._framework))
        else:
            t = f.empty(e)
            if e.nbytes:
                f.read_range(e, 0, e.nbytes, t.data_ptr, _flags(self._verify,
                                                                self._mode == "direct"))
        return convert(t, self._framework)

    def get_slice(self, name: str) -> _Slice:
        f = self._file_live()
        return _Slice(self, f.entry(name))

    def __contains__(self, name: object) -> bool:
        f = self._file_live()
        return isinstance(name, str) and (name in f.by_name or name in f.aliases)

    def __len__(self) -> int:
        return len(self._file_live().names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def close(self) -> None:
        """Closes the file (idempotent)."""
        f, self._file = self._file, None
        if f is not None:
            f.close()

    def __enter__(self) -> safe_open:
        self._file_live()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        f = self._file
        return f"<dlpx.safe_open {f.path!r}>" if f else "<dlpx.safe_open (closed)>"

