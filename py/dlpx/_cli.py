"""The ``dlpx`` command (also ``python -m dlpx``): tensor files from the shell.

    dlpx ls FILE            names, dtypes, shapes, sizes and metadata
    dlpx verify FILE        checks dlpx checksums (the exit code says the result)
    dlpx convert IN OUT     .pt/.pth/.bin (torch, weights_only), .npz or
                            .safetensors to safetensors with checksums
    dlpx bench FILE         each load mode's throughput beside a plain read
    dlpx cp SRC DST         copies between a local file and an http(s):// or
                            s3:// URL, with progress
    dlpx shm ls             dlpx's named shared-memory segments in /dev/shm
    dlpx shm rm NAME...     removes named segments (--all: every one of this user's)

FILE, IN and OUT may be http://, https:// or s3:// URLs (dlpx.remote says
how S3 is reached and signed).  Every command takes --json (one JSON document on stdout).  Progress bars
(tqdm) appear on long work when stderr is a terminal.  Exit codes:
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

from ._remote import is_url

__all__ = ["main", "EXIT_OK", "EXIT_MISMATCH", "EXIT_USAGE", "EXIT_BAD_INPUT",
           "EXIT_NO_CHECKSUMS"]

EXIT_OK = 0            # done; for verify: every checksum matched
EXIT_MISMATCH = 1      # verify: a tensor does not match its checksum
EXIT_USAGE = 2         # bad command line (argparse's own code)
EXIT_BAD_INPUT = 3     # a file is missing, unreadable or malformed
EXIT_NO_CHECKSUMS = 4  # verify: the file has no dlpx checksums

__doc__ = (__doc__ or "") + "".join(
    f"    {v}  {k[5:].lower().replace('_', ' ')}\n" for k, v in sorted(
        ((k, v) for k, v in globals().items() if k.startswith("EXIT_")), key=lambda kv: kv[1]))

_BIG = 256 << 20  # bytes of work that earn a progress bar


class _Progress:
    """A tqdm bar over bytes when stderr is a terminal and the work is long;
    otherwise nothing."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = None
        if enabled and total >= _BIG and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True,
                            unit_divisor=1024, file=sys.stderr, leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _emit(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


# ---- ls ------------------------------------------------------------------------


def _cmd_ls(args: argparse.Namespace) -> int:
    from ._files import File
    from ._load import shard_paths
    paths, _ = shard_paths(args.file)
    docs: list[dict[str, Any]] = []
    for p in paths:
        with File(p) as f:
            tensors = [{"name": e.name, "dtype": e.st_dtype, "shape": list(e.shape),
                        "nbytes": e.nbytes, "data_offsets": [e.begin, e.end]}
                       for e in f.entries]
            docs.append({"file": p, "size": f.size(), "tensors": tensors,
                         "aliases": f.aliases, "metadata": f.metadata() or {},
                         "checksums": f.has_checksums})
    if args.json:
        _emit(docs[0] if len(docs) == 1 else {"files": docs})
        return EXIT_OK
    for d in docs:
        n = sum(t["nbytes"] for t in d["tensors"])
        print(f"{d['file']}: {len(d['tensors'])} tensors, {_size(n)} of data, "
              f"checksums: {'yes' if d['checksums'] else 'no'}")
        rows = [(t["name"], t["dtype"], "[" + ", ".join(map(str, t["shape"])) + "]",
                 _size(t["nbytes"])) for t in d["tensors"]]
        rows += [(a, "", f"(alias of {b})", "") for a, b in sorted(d["aliases"].items())]
        if rows:
            w = [max(len(r[i]) for r in rows) for i in range(4)]
            for r in rows:
                print(f"  {r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:>{w[3]}}")
        for k, v in sorted(d["metadata"].items()):
            print(f"  metadata {k} = {v}")
    return EXIT_OK


# ---- verify --------------------------------------------------------------------------


def _cmd_verify(args: argparse.Namespace) -> int:
    from ._files import File
    from ._lib import ffi, lib
    from ._load import DEFAULT_CHUNK_SIZE
    with File(args.file) as f:
        result: dict[str, Any] = {"file": f.path, "checksums": f.has_checksums,
                                  "tensors": len(f.entries), "checked": 0,
                                  "bytes": sum(e.nbytes for e in f.entries), "mismatched": []}
        if not f.has_checksums:
            result["ok"] = False
            if args.json:
                _emit(result)
            else:
                print(f"{f.path}: no dlpx checksums (not saved by dlpx with checksums); "
                      "nothing to verify", file=sys.stderr)
            return EXIT_NO_CHECKSUMS
        # a URL: larger ranges, each fetched by concurrent requests
        step = DEFAULT_CHUNK_SIZE * (4 if f.remote else 1)
        buf = bytearray(step)
        addr = int(ffi.cast("uintptr_t", ffi.from_buffer(buf)))
        bar = _Progress(result["bytes"], "verify", not args.json)
        t0 = time.perf_counter()
        try:
            for e in f.entries:
                result["checked"] += 1
                for b in range(0, e.nbytes, step):
                    end = min(e.nbytes, b + step)
                    try:
                        f.read_range(e, b, end, addr, lib.DLPX_READ_VERIFY)
                    except ValueError as exc:  # a mismatch: the message names the tensor
                        result["mismatched"].append({"name": e.name, "error": str(exc)})
                        bar.update(e.nbytes - b)
                        break
                    bar.update(end - b)
        finally:
            bar.close()
        result["seconds"] = round(time.perf_counter() - t0, 6)
        result["ok"] = not result["mismatched"]
    if args.json:
        _emit(result)
    elif result["ok"]:
        print(f"{result['file']}: OK ({result['tensors']} tensors, {_size(result['bytes'])})")
    else:
        for m in result["mismatched"]:
            print(f"{result['file']}: MISMATCH in {m['name']!r}: {m['error']}", file=sys.stderr)
    return EXIT_OK if result["ok"] else EXIT_MISMATCH


# ---- convert ---------------------------------------------------------------------------


def _state_dict(obj: Any, src: str) -> dict[str, Any]:
    """The flat name -> tensor dict in a loaded checkpoint (a state dict, or
    one under "state_dict" / "model" as training scripts save them)."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(
                    hasattr(v, "__dlpack__") for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ValueError(f"{src}: not a state dict (a dict of name -> tensor)")
    bad = [k for k, v in obj.items() if not hasattr(v, "__dlpack__")]
    if bad:
        raise ValueError(f"{src}: entries that are not tensors: {', '.join(bad[:5])}"
                         f"{' ...' if len(bad) > 5 else ''}")
    return obj


def _read_any(src: str) -> tuple[dict[str, Any], Optional[dict[str, str]]]:
    low = src.lower()
    if low.endswith((".pt", ".pth", ".bin", ".ckpt")):
        import torch
        try:
            obj = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # an old (non-zip) pickle cannot be mapped
            obj = torch.load(src, map_location="cpu", weights_only=True)
        return _state_dict(obj, src), None
    if low.endswith(".npz"):
        import numpy as np
        with np.load(src, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, None
    if low.endswith((".safetensors", ".json")):
        from ._files import File
        from ._load import load_file, shard_paths
        paths, _ = shard_paths(src)
        meta: dict[str, str] = {}
        for p in paths:
            with File(p) as f:
                meta.update(f.metadata() or {})
        return load_file(src, mode="mmap"), meta or None
    raise ValueError(f"{src}: unknown input format (expected .pt, .pth, .bin, .ckpt, .npz, "
                     ".safetensors or a .safetensors.index.json)")


def _untie(tensors: dict[str, Any]) -> dict[str, Any]:
    """Copies of tensors that share memory with an earlier one, so that every
    reader sees every name (the reference readers know no aliases)."""
    from ._consume import from_dlpack
    from ._convert import exportable
    seen: list[tuple[int, int, str]] = []
    out = {}
    for name in tensors:
        v = from_dlpack(exportable(tensors[name]))
        lo = v.data_ptr
        hi = lo + v.nbytes
        if v.nbytes and any(a < hi and lo < b for a, b, _ in seen):
            v = v.copy()
        elif v.nbytes:
            seen.append((lo, hi, name))
        out[name] = v
    return out


def _size_of(path: str) -> int:
    if is_url(path):
        from .remote import stat
        return stat(path)
    return os.path.getsize(path)


def _cmd_convert(args: argparse.Namespace) -> int:
    from ._save import save_file
    t0 = time.perf_counter()
    tensors, meta = _read_any(args.input)
    if args.tied == "copy":
        tensors = _untie(tensors)
    if args.input == args.output or (not is_url(args.input) and not is_url(args.output) and
                                     os.path.realpath(args.input) == os.path.realpath(args.output)):
        raise ValueError("the output would replace the input while it is read; "
                         "write to another path")
    save_file(tensors, args.output, meta, checksum=not args.no_checksum,
              tied="once" if args.tied == "once" else "error")
    res = {"input": args.input, "output": args.output, "tensors": len(tensors),
           "bytes": _size_of(args.output), "checksums": not args.no_checksum,
           "seconds": round(time.perf_counter() - t0, 6)}
    if args.json:
        _emit(res)
    else:
        print(f"{args.output}: {res['tensors']} tensors, {_size(res['bytes'])}"
              f"{', with checksums' if res['checksums'] else ''}")
    return EXIT_OK


# ---- bench ------------------------------------------------------------------------------


def _touch(tensors: dict[str, Any]) -> None:
    """Reads one byte of every page of every tensor (mmap loads are lazy)."""
    import numpy as np
    for t in tensors.values():
        a = np.asarray(t.numpy() if hasattr(t, "numpy") else t)
        if a.size:
            b = a.reshape(-1).view(np.uint8)
            b[::4096].sum()


def _plain_read(path: str, threads: int, chunk: int) -> float:
    """A plain read of the whole file into memory faulted beforehand."""
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor
    size = os.path.getsize(path)
    buf = np.ones(size, np.uint8)  # faulted
    fd = os.open(path, os.O_RDONLY)
    try:
        def part(off: int) -> None:
            mv = memoryview(buf)[off:off + chunk]  # type: ignore[arg-type]
            got = 0
            while got < len(mv):
                n = os.preadv(fd, [mv[got:]], off + got)
                if n <= 0:
                    raise OSError(f"{path}: short read")
                got += n
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(part, range(0, size, chunk)))
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _cmd_bench(args: argparse.Namespace) -> int:
    from ._files import File
    from ._load import DEFAULT_THREADS, load_file, load_into
    threads = args.threads or DEFAULT_THREADS
    with File(args.file) as f:
        has_sums = f.has_checksums
        shapes = {e.name: (e.shape, e.dtype) for e in f.entries}
        size = f.size()
    if is_url(args.file):
        return _bench_url(args, size, has_sums, shapes)
    with open(args.file, "rb") as fp:  # warm the page cache
        while fp.read(64 << 20):
            pass
    rows: list[tuple[str, float]] = []
    rows.append((f"plain read, {threads} threads (limit)",
                 min(_plain_read(args.file, threads, 16 << 20) for _ in range(args.repeat))))
    rows.append(("dlpx mmap (pages touched)", _best(
        lambda: _touch(load_file(args.file, mode="mmap")), args.repeat)))
    rows.append(("dlpx pread", _best(
        lambda: load_file(args.file, mode="pread", verify=False, threads=threads), args.repeat)))
    if has_sums:
        rows.append(("dlpx pread, verified", _best(
            lambda: load_file(args.file, mode="pread", verify=True, threads=threads),
            args.repeat)))
    rows.append(("dlpx direct", _best(
        lambda: load_file(args.file, mode="direct", verify=False, threads=threads), args.repeat)))
    targets = {}
    for name, (shape, dt) in shapes.items():
        from ._create import zeros
        targets[name] = zeros(shape, dt)  # faulted, as a model's parameters are
    rows.append(("dlpx into (existing tensors)", _best(
        lambda: load_into(args.file, targets, verify=False, threads=threads), args.repeat)))
    del targets
    res = {"file": args.file, "bytes": size, "threads": threads, "repeat": args.repeat,
           "results": [{"method": m, "seconds": round(s, 6), "GB_per_s": round(size / s / 1e9, 3)}
                       for m, s in rows]}
    if args.json:
        _emit(res)
        return EXIT_OK
    print(f"{args.file}: {_size(size)}, warm page cache, best of {args.repeat}, "
          f"{threads} threads")
    w = max(len(m) for m, _ in rows)
    print(f"  {'method':<{w}}  {'seconds':>9}  {'GB/s':>7}  {'vs limit':>8}")
    limit = rows[0][1]
    for m, s in rows:
        print(f"  {m:<{w}}  {s:9.4f}  {size / s / 1e9:7.2f}  {100 * limit / s:7.0f}%")
    return EXIT_OK


def _bench_url(args: argparse.Namespace, size: int, has_sums: bool,
               shapes: dict[str, Any]) -> int:
    from ._create import zeros
    from ._load import load_file, load_into
    from .remote import copy
    rows: list[tuple[str, float]] = []
    scratch = _scratch()
    rows.append(("dlpx.remote.copy to a file (transfer only)", _best(
        lambda: copy(args.file, scratch), args.repeat)))
    rows.append(("dlpx load_file", _best(
        lambda: load_file(args.file, verify=False), args.repeat)))
    if has_sums:
        rows.append(("dlpx load_file, verified", _best(
            lambda: load_file(args.file, verify=True), args.repeat)))
    targets = {name: zeros(shape, dt) for name, (shape, dt) in shapes.items()}
    rows.append(("dlpx into (existing tensors)", _best(
        lambda: load_into(args.file, targets, verify=False), args.repeat)))
    del targets
    res = {"file": args.file, "bytes": size, "repeat": args.repeat,
           "results": [{"method": m, "seconds": round(s, 6), "GB_per_s": round(size / s / 1e9, 3)}
                       for m, s in rows]}
    if args.json:
        _emit(res)
        return EXIT_OK
    print(f"{args.file}: {_size(size)}, best of {args.repeat}")
    w = max(len(m) for m, _ in rows)
    print(f"  {'method':<{w}}  {'seconds':>9}  {'GB/s':>7}")
    for m, s in rows:
        print(f"  {m:<{w}}  {s:9.4f}  {size / s / 1e9:7.2f}")
    return EXIT_OK


def _scratch() -> str:
    """A path in a temporary directory, removed at exit (a download needs a
    file to rename into place)."""
    import atexit
    import tempfile
    d = tempfile.mkdtemp(prefix="dlpx-bench-")
    path = os.path.join(d, "object")

    def clean() -> None:
        try:
            os.unlink(path)
        except OSError:
            pass
        try:
            os.rmdir(d)
        except OSError:
            pass
    atexit.register(clean)
    return path


# ---- cp -------------------------------------------------------------------------------------


def _cmd_cp(args: argparse.Namespace) -> int:
    from .remote import copy
    src, dst = args.src, args.dst
    if not is_url(dst) and os.path.isdir(dst):  # into a directory, as cp does
        dst = os.path.join(dst, os.path.basename(src.rstrip("/").split("?")[0]) or "object")
    if is_url(dst) and dst.endswith("/") and not is_url(src):
        dst = dst + os.path.basename(src)
    state: dict[str, Any] = {"bar": None, "done": 0}
    quiet = args.json or args.quiet

    def progress(done: int, total: int) -> None:
        if state["bar"] is None:
            state["bar"] = _Progress(total, "cp", not quiet)
        state["bar"].update(done - state["done"])
        state["done"] = done

    t0 = time.perf_counter()
    try:
        copy(src, dst, progress=progress)
    finally:
        if state["bar"] is not None:
            state["bar"].close()
    secs = time.perf_counter() - t0
    n = state["done"]
    res = {"src": src, "dst": dst, "bytes": n, "seconds": round(secs, 6)}
    if args.json:
        _emit(res)
    elif not args.quiet:
        print(f"{src} -> {dst}: {_size(n)} in {secs:.2f} s"
              f"{f' ({n / secs / 1e6:.0f} MB/s)' if secs > 0 and n else ''}")
    return EXIT_OK


# ---- shm ------------------------------------------------------------------------------------


def _cmd_shm_ls(args: argparse.Namespace) -> int:
    from ._share import list_named
    segs = list_named()
    if args.json:
        _emit({"segments": segs})
        return EXIT_OK
    if not segs:
        print("no named dlpx segments in /dev/shm")
        return EXIT_OK
    w = max(len(s["name"]) for s in segs)
    for s in segs:
        note = "  (partial: left by a killed producer)" if s["partial"] else ""
        print(f"{s['name']:<{w}}  {_size(s['bytes']):>10}  uid {s['uid']}{note}")
    return EXIT_OK


def _cmd_shm_rm(args: argparse.Namespace) -> int:
    from ._share import list_named, unlink
    if args.all == bool(args.names):
        print("dlpx shm rm: give segment names or --all (not both)", file=sys.stderr)
        return EXIT_USAGE
    removed, failed = [], []
    if args.all:
        for s in list_named():
            if s["uid"] != os.geteuid():
                continue
            try:
                os.unlink(s["file"])  # partial ones too, which unlink() refuses by name
                removed.append(s["name"])
            except OSError as e:
                failed.append({"name": s["name"], "error": str(e)})
    else:
        for name in args.names:
            try:
                unlink(name)
                removed.append(name)
            except (OSError, ValueError, TypeError) as e:
                failed.append({"name": name, "error": str(e)})
    if args.json:
        _emit({"removed": removed, "failed": failed})
    else:
        for n in removed:
            print(f"removed {n}")
        for f in failed:
            print(f"dlpx shm rm: {f['name']}: {f['error']}", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else EXIT_OK


# ---- main -----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dlpx",
        description="Tensor files (safetensors format) and shared segments from the shell.",
        epilog="exit codes: 0 ok, 1 checksum mismatch, 2 usage, 3 missing/unreadable/"
               "malformed input, 4 no checksums to verify")
    from ._version import __version__
    p.add_argument("--version", action="version", version=f"dlpx {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("ls", help="names, dtypes, shapes, sizes and metadata")
    s.add_argument("file", help="a .safetensors file, a .safetensors.index.json, or an "
                                "http(s):// or s3:// URL")
    s.set_defaults(run=_cmd_ls)

    s = sub.add_parser("verify", help="check dlpx checksums (exit code 0 ok, 1 mismatch, "
                                      "4 no checksums)")
    s.add_argument("file")
    s.set_defaults(run=_cmd_verify)

    s = sub.add_parser("convert", help="convert .pt/.pth/.bin, .npz or .safetensors to "
                                       "safetensors with checksums")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--no-checksum", action="store_true", help="write no checksums")
    s.add_argument("--tied", choices=("copy", "once", "error"), default="copy",
                   help="tensors sharing memory: store a copy under each name (default), "
                        "store once (dlpx readers restore the names), or fail")
    s.set_defaults(run=_cmd_convert)

    s = sub.add_parser("cp", help="copy between a local file and an http(s):// or s3:// URL")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary")
    s.set_defaults(run=_cmd_cp)

    s = sub.add_parser("bench", help="each load mode's throughput beside a plain read")
    s.add_argument("file")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--repeat", type=int, default=3)
    s.set_defaults(run=_cmd_bench)

    shm = sub.add_parser("shm", help="dlpx's named shared-memory segments: ls, rm")
    shm_sub = shm.add_subparsers(dest="shm_command", required=True, metavar="SHM_COMMAND")
    s_ls = shm_sub.add_parser("ls", help="list dlpx's named segments in /dev/shm")
    s_ls.set_defaults(run=_cmd_shm_ls)
    s_rm = shm_sub.add_parser("rm", help="remove named segments")
    s_rm.add_argument("names", nargs="*", metavar="NAME")
    s_rm.add_argument("--all", action="store_true", help="every named segment of this user, "
                      "partial ones too")
    s_rm.set_defaults(run=_cmd_shm_rm)

    for name in ("ls", "verify", "convert", "bench", "cp"):
        sub.choices[name].add_argument("--json", action="store_true",
                                       help="one JSON document on stdout")
    for s in (s_ls, s_rm):
        s.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "repeat", 1) < 1 or (getattr(args, "threads", None) or 1) < 1:
        print("dlpx: --repeat and --threads must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except BrokenPipeError:
        return EXIT_OK
    except ImportError as e:  # a format whose library is not installed (.pt without torch)
        msg = f"this needs a library that is not installed: {e}"
        if getattr(args, "json", False):
            _emit({"error": msg, "type": "ImportError"})
        print(f"dlpx {args.command}: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, ValueError, TypeError) as e:
        msg = str(e) or type(e).__name__
        if getattr(args, "json", False):
            _emit({"error": msg, "type": type(e).__name__})
        print(f"dlpx {args.command}: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("dlpx: interrupted", file=sys.stderr)
        return 130
