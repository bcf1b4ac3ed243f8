"""dlpx on a CUDA GPU beside its peers, measured in the same run: pinned
host <-> device bandwidth, device copies, safetensors files to the GPU,
the per-call cost of DLPack exchanges of CUDA tensors, and the caching
pool's allocate+free.  Prints side-by-side tables (and JSON with --json);
never asserts on time.

    python bench/bench_cuda.py [--quick] [--size-gib N] [--dir DIR] [--json PATH]

Tables (GB/s = bytes of the tensor or file / seconds; the median of the
repetitions after a warm-up, the fastest in parentheses where shown):
  - H2D and D2H between pinned host memory and the device, 1 MiB, 64 MiB
    and 1 GiB: dlpx Tensor.to from a dlpx.empty(..., device="cuda_host")
    source (and copy_ into an existing tensor) beside PyTorch's pinned
    tensor .to("cuda", non_blocking=True) (and copy_) + synchronize;
  - D2D: dlpx Tensor.copy() beside torch.clone();
  - file to GPU: a 1 GiB and a --size-gib GiB (10) safetensors file written
    to a new directory under --dir (default: the temp dir) and read once
    first (warm page cache); dlpx.load_file(device="cuda") beside
    safetensors.torch.load_file(device="cuda"), fastsafetensors and
    runai-model-streamer when importable; the pinned H2D bandwidth is the
    limit row;
  - exchange: microseconds per DLPack hand-over of a CUDA tensor,
    dlpx<->torch and dlpx<->cupy beside torch<->cupy natively;
  - pool: allocate+free of device memory per call, dlpx.empty(device=
    "cuda") beside torch.empty(device="cuda"), and from C
    (bench/bench_cuda_pool.c, compiled here against libdlpx)
    dlpx_cuda_pool_alloc/free beside cuMemAlloc/cuMemFree.

--quick: small sizes and few repetitions, a smoke run.  Without a GPU the
benchmark prints one line saying so and exits 0.  PyTorch and CuPy are
imported only when there is a GPU; a missing peer's cells read n/a.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402  (bench/machine.py)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

Cell = Any  # a float (the measurement) or a str ("n/a: why")


# ---- timing -------------------------------------------------------------------------------

def timed(fn: Callable[[], Any], reps: int, warmups: int = 1) -> tuple[float, float]:
    """(median, fastest) seconds of fn(), which must finish its GPU work
    before it returns."""
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def per_call(fn: Callable[[], Any], calls: int, reps: int) -> float:
    """The fastest of |reps| averages over |calls| calls, in seconds."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def attempt(fn: Callable[[], Cell]) -> Cell:
    """fn()'s measurement, or "n/a: <the error>" (a peer that breaks must
    not end the run)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - reported in the table
        return f"n/a: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


# ---- tables --------------------------------------------------------------------------------

def size_name(n: int) -> str:
    if n >= GiB and n % GiB == 0:
        return f"{n // GiB} GiB"
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    return f"{n // KiB} KiB" if n % KiB == 0 else f"{n} B"


def fmt(c: Cell, width: int, digits: int = 2) -> str:
    """A measurement, or "n/a" for a reason (listed under the table)."""
    if isinstance(c, (int, float)):
        return f"{c:{width}.{digits}f}"
    return f"{'n/a':>{width}s}"


def print_reasons(cells: list[Cell]) -> None:
    """Why the n/a cells of a table are n/a, each reason once."""
    seen = []
    for c in cells:
        if isinstance(c, str) and c not in seen:
            seen.append(c)
    for why in seen:
        print(f"  {why}")


def ratio(a: Cell, b: Cell, higher_better: bool) -> str:
    """How many times better dlpx's |a| is than the peer's |b|."""
    if not isinstance(a, float) or not isinstance(b, float) or a <= 0 or b <= 0:
        return f"{'-':>8s}"
    return f"{(a / b if higher_better else b / a):7.2f}x"


def print_pairs(title: str, unit: str, rows: list[tuple[str, Cell, str, Cell]],
                higher_better: bool, note: str = "", digits: int = 2) -> None:
    """Rows of (what, dlpx's value, the peer, the peer's value)."""
    print(f"## {title}")
    print()
    head = (f"{'what':34s} | {'dlpx ' + unit:>12s} | {'peer':42s} | {'peer ' + unit:>12s} | "
            f"{'dlpx vs peer':>12s}")
    print(head)
    print("-" * len(head))
    for what, mine, peer, theirs in rows:
        print(f"{what:34s} | {fmt(mine, 12, digits)} | {peer:42s} | {fmt(theirs, 12, digits)} | "
              f"{ratio(mine, theirs, higher_better):>12s}")
    print_reasons([c for row in rows for c in (row[1], row[3])])
    if note:
        print(note)
    print()


# ---- the peers ---------------------------------------------------------------------------------

class Peers:
    """PyTorch and CuPy when they import and see a GPU, else the reason."""

    def __init__(self) -> None:
        self.torch: Any = None
        self.cupy: Any = None
        self.why_torch = self.why_cupy = ""
        try:
            import torch
            if torch.cuda.is_available():
                self.torch = torch
            else:
                self.why_torch = "n/a: PyTorch has no CUDA"
        except ImportError:
            self.why_torch = "n/a: PyTorch not installed"
        try:
            import cupy
            cupy.cuda.runtime.getDeviceCount()
            self.cupy = cupy
        except ImportError:
            self.why_cupy = "n/a: CuPy not installed"
        except Exception as e:  # noqa: BLE001 - CuPy's CUDARuntimeError
            self.why_cupy = f"n/a: CuPy has no GPU ({e})"


# ---- bandwidth: pinned <-> device, device -> device ---------------------------------------

def bench_bandwidth(dlpx: Any, peers: Peers, sizes: list[int], reps: int) -> dict[str, Any]:
    torch = peers.torch
    res: dict[str, Any] = {}
    for n in sizes:
        pinned = dlpx.empty((n,), "uint8", device="cuda_host")
        dev = dlpx.empty((n,), "uint8", device="cuda")
        r = res[size_name(n)] = {}

        def gbs(fn: Callable[[], Any]) -> Cell:
            return attempt(lambda: n / 1e9 / timed(fn, reps)[0])
        # dlpx waits for its own copies (non_blocking=False)
        r["h2d.dlpx"] = gbs(lambda: pinned.to("cuda"))
        r["d2h.dlpx"] = gbs(lambda: dev.to("cuda_host"))
        r["h2d_into.dlpx"] = gbs(lambda: dev.copy_(pinned))
        r["d2h_into.dlpx"] = gbs(lambda: pinned.copy_(dev))
        r["d2d.dlpx"] = gbs(lambda: dev.copy())
        if torch is None:
            for k in ("h2d", "d2h", "h2d_into", "d2h_into", "d2d"):
                r[k + ".torch"] = peers.why_torch
        else:
            tp = torch.empty(n, dtype=torch.uint8, pin_memory=True)
            td = torch.empty(n, dtype=torch.uint8, device="cuda")
            sync = torch.cuda.synchronize
            r["h2d.torch"] = gbs(lambda: (tp.to("cuda", non_blocking=True), sync()))
            r["d2h.torch"] = gbs(lambda: (td.to("cpu", non_blocking=True), sync()))
            r["h2d_into.torch"] = gbs(lambda: (td.copy_(tp, non_blocking=True), sync()))
            r["d2h_into.torch"] = gbs(lambda: (tp.copy_(td, non_blocking=True), sync()))
            r["d2d.torch"] = gbs(lambda: (td.clone(), sync()))
            del tp, td
        del pinned, dev
        dlpx.cuda.empty_cache()
        dlpx.cuda.empty_cache(host=True)
        if torch is not None:
            torch.cuda.empty_cache()
    return res


def print_bandwidth(res: dict[str, Any]) -> None:
    rows = []
    labels = {  # what dlpx does, what the peer does
        "h2d": ("H2D pinned.to(cuda)", "pinned.to(cuda, non_blocking)+sync"),
        "d2h": ("D2H dev.to(cuda_host)", "dev.to(cpu, non_blocking)+sync"),
        "h2d_into": ("H2D dev.copy_(pinned)", "dev.copy_(pinned, non_blocking)+sync"),
        "d2h_into": ("D2H pinned.copy_(dev)", "pinned.copy_(dev, non_blocking)+sync"),
    }
    for key, (what, peer) in labels.items():
        for size, r in res.items():
            rows.append((f"{what} {size}", r[key + ".dlpx"], "torch " + peer, r[key + ".torch"]))
    print_pairs("Pinned host <-> device (GB/s, median)", "GB/s", rows, True,
                "to(): a new tensor each call (from the pools); copy_(): an existing one")
    rows = [(f"D2D Tensor.copy() {size}", r["d2d.dlpx"], "torch .clone()", r["d2d.torch"])
            for size, r in res.items()]
    print_pairs("Device -> device (GB/s of the tensor, median)", "GB/s", rows, True)


# ---- files to the GPU ---------------------------------------------------------------------------

def write_safetensors(path: str, nbytes: int, chunk: int) -> int:
    """A safetensors file of about |nbytes|: float32 "layers.i.weight"
    tensors of |chunk| bytes, each with a small "layers.i.bias", written
    from one random block (so it needs no |nbytes| of memory)."""
    import numpy as np
    block = np.random.default_rng(0).integers(0, 255, chunk, dtype=np.uint8).tobytes()
    bias = block[:4 * KiB]
    layers = max(1, nbytes // chunk)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    off = 0
    for i in range(layers):
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [chunk // 4 // 1024, 1024],
                                        "data_offsets": [off, off + chunk]}
        off += chunk
        header[f"layers.{i}.bias"] = {"dtype": "F32", "shape": [len(bias) // 4],
                                      "data_offsets": [off, off + len(bias)]}
        off += len(bias)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _ in range(layers):
            f.write(block)
            f.write(bias)
    return os.path.getsize(path)


def warm(path: str) -> None:
    """Reads the file once, so every load finds it in the page cache."""
    buf = bytearray(64 * MiB)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def file_loaders(dlpx: Any, peers: Peers) -> dict[str, Callable[[str], Cell]]:
    """name -> load(path) that puts every tensor on the GPU and waits; or
    the reason it cannot run."""
    torch = peers.torch

    def dlpx_load(path: str) -> None:
        out = dlpx.load_file(path, device="cuda")
        dlpx.cuda.synchronize()
        del out

    loaders: dict[str, Any] = {"dlpx.load_file(device=cuda)": dlpx_load}
    if torch is None:
        why = peers.why_torch
        return {**loaders, "safetensors.torch.load_file(cuda)": why,
                "fastsafetensors": why, "runai-model-streamer": why}
    try:
        import safetensors.torch as st

        def st_load(path: str) -> None:
            out = st.load_file(path, device="cuda")
            torch.cuda.synchronize()
            del out
        loaders["safetensors.torch.load_file(cuda)"] = st_load
    except ImportError:
        loaders["safetensors.torch.load_file(cuda)"] = "n/a: not installed"
    try:
        from fastsafetensors import fastsafe_open

        def fst_load(path: str) -> None:
            with fastsafe_open(filenames=[path], nogds=True, device="cuda:0",
                               debug_log=False) as f:
                keys = f.keys() if hasattr(f, "keys") else f.get_keys()  # 0.5 / older
                out = [f.get_tensor(k) for k in keys]
                torch.cuda.synchronize()
                del out
        loaders["fastsafetensors"] = fst_load
    except ImportError:
        loaders["fastsafetensors"] = "n/a: not installed"
    try:
        from runai_model_streamer import SafetensorsStreamer

        def runai_load(path: str) -> None:
            out = {}
            with SafetensorsStreamer() as s:
                try:
                    s.stream_file(path, device="cuda")  # newer versions stream to the GPU
                except TypeError:
                    s.stream_file(path)
                for name, t in s.get_tensors():  # older ones: host tensors, copied out
                    out[name] = t.to("cuda", non_blocking=False)
            torch.cuda.synchronize()
            del out
        loaders["runai-model-streamer"] = runai_load
    except ImportError:
        loaders["runai-model-streamer"] = "n/a: not installed"
    return loaders


def bench_files(dlpx: Any, peers: Peers, sizes: list[int], chunk: int, reps: int,
                base_dir: Optional[str]) -> dict[str, Any]:
    d = tempfile.mkdtemp(prefix="dlpx-bench-cuda-", dir=base_dir)
    res: dict[str, Any] = {}
    try:
        loaders = file_loaders(dlpx, peers)
        for n in sizes:
            path = os.path.join(d, f"model-{size_name(n).replace(' ', '')}.safetensors")
            t0 = time.perf_counter()
            nbytes = write_safetensors(path, n, chunk)
            warm(path)
            r = res[size_name(n)] = {"bytes": nbytes, "prepare_s": time.perf_counter() - t0}
            for name, load in loaders.items():
                if isinstance(load, str):
                    r[name] = load
                    continue
                # the big file once (after its warm read), smaller ones median of |reps|
                big = n > 2 * GiB
                secs = attempt(lambda: timed(lambda: load(path), 1 if big else reps,
                                             0 if big else 1))
                r[name] = secs if isinstance(secs, str) else {"s": secs[0], "min_s": secs[1],
                                                              "gbs": nbytes / 1e9 / secs[0]}
                dlpx.cuda.empty_cache()
                if peers.torch is not None:
                    peers.torch.cuda.empty_cache()
            os.unlink(path)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return res


def print_files(res: dict[str, Any], limit: dict[str, Cell]) -> None:
    sizes = list(res)
    print("## Safetensors file -> GPU, warm page cache (GB/s of the file; seconds)")
    print()
    head = f"{'method':36s} | " + " | ".join(f"{s:>22s}" for s in sizes)
    print(head)
    print("-" * len(head))
    names = [k for k in next(iter(res.values())) if k not in ("bytes", "prepare_s")] if res else []
    reasons = []
    for name in names:
        cells = []
        for s in sizes:
            c = res[s][name]
            cells.append(f"{c['gbs']:8.2f} ({c['s']:8.3f} s)".rjust(22) if isinstance(c, dict)
                         else fmt(c, 22))
            reasons.append(c if isinstance(c, str) else None)
        print(f"{name:36s} | " + " | ".join(cells))
    for who, c in limit.items():
        print(f"{'limit: pinned H2D, ' + who:36s} | " + " | ".join(fmt(c, 22) for _ in sizes))
        reasons.append(c)
    print_reasons(reasons)
    print()


# ---- exchange: per-call DLPack hand-overs of CUDA tensors ---------------------------------

def bench_exchange(dlpx: Any, peers: Peers, calls: int, reps: int) -> dict[str, Cell]:
    torch, cupy = peers.torch, peers.cupy
    d = dlpx.zeros((1024,), "float32", device="cuda")
    res: dict[str, Cell] = {}

    def us(fn: Callable[[], Any]) -> Cell:
        return attempt(lambda: 1e6 * per_call(fn, calls, reps))
    if torch is not None:
        t = torch.zeros(1024, device="cuda")
        res["dlpx->torch"] = us(lambda: torch.from_dlpack(d))
        res["torch->dlpx"] = us(lambda: dlpx.from_dlpack(t))
    else:
        res["dlpx->torch"] = res["torch->dlpx"] = peers.why_torch
    if cupy is not None:
        c = cupy.zeros(1024, dtype=cupy.float32)
        res["dlpx->cupy"] = us(lambda: cupy.from_dlpack(d))
        res["cupy->dlpx"] = us(lambda: dlpx.from_dlpack(c))
    else:
        res["dlpx->cupy"] = res["cupy->dlpx"] = peers.why_cupy
    if torch is not None and cupy is not None:
        res["torch->cupy"] = us(lambda: cupy.from_dlpack(t))
        res["cupy->torch"] = us(lambda: torch.from_dlpack(c))
    else:
        res["torch->cupy"] = res["cupy->torch"] = peers.why_torch or peers.why_cupy
    return res


def print_exchange(res: dict[str, Cell]) -> None:
    calls = {"dlpx->torch": "torch.from_dlpack(d)", "torch->dlpx": "dlpx.from_dlpack(t)",
             "dlpx->cupy": "cupy.from_dlpack(d)", "cupy->dlpx": "dlpx.from_dlpack(c)",
             "torch->cupy": "cupy.from_dlpack(t)", "cupy->torch": "torch.from_dlpack(c)"}
    # each dlpx hand-over beside the native one with the same consumer or producer
    pairs = [("dlpx->torch", "cupy->torch"), ("torch->dlpx", "torch->cupy"),
             ("dlpx->cupy", "torch->cupy"), ("cupy->dlpx", "cupy->torch")]
    rows = [(f"{a:12s} {calls[a]}", res[a], f"{b:12s} {calls[b]}", res[b]) for a, b in pairs]
    print_pairs("DLPack exchange of a CUDA tensor (1024 float32), us per call (fastest average)",
                "us", rows, False, "each call makes the consumer's tensor and drops it again",
                digits=3)


# ---- the pool: allocate+free ---------------------------------------------------------------

def find_include(dlpx: Any) -> Optional[str]:
    """A directory holding dlpx/cuda.h: $DLPX_INCLUDE, the package's, the
    checkout's."""
    for d in (os.environ.get("DLPX_INCLUDE"), attempt(dlpx.include_dir),
              os.path.join(ROOT, "include")):
        if isinstance(d, str) and os.path.exists(os.path.join(d, "dlpx", "cuda.h")):
            return d
    return None


def build_pool_bench(dlpx: Any, out_dir: str) -> tuple[Optional[str], str]:
    """Compiles bench_cuda_pool.c against the libdlpx this process loaded:
    (the program, "") or (None, why not)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    inc = find_include(dlpx)
    if cc is None:
        return None, "n/a: no C compiler"
    if inc is None:
        return None, "n/a: no dlpx headers (set DLPX_INCLUDE)"
    lib = os.path.realpath(dlpx.library_path)
    exe = os.path.join(out_dir, "bench_cuda_pool")
    cmd = [cc, "-std=c11", "-O2", "-I", inc, "-o", exe, os.path.join(HERE, "bench_cuda_pool.c"),
           lib, f"-Wl,-rpath,{os.path.dirname(lib)}", "-ldl"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"n/a: compile failed: {(r.stderr.strip().splitlines() or ['?'])[0]}"
    return exe, ""


def bench_pool(dlpx: Any, peers: Peers, sizes: list[int], calls: int, reps: int,
               quick: bool) -> dict[str, Any]:
    torch = peers.torch
    res: dict[str, Any] = {}
    for n in sizes:
        r = res[size_name(n)] = {}
        r["dlpx.empty"] = attempt(lambda: 1e6 * per_call(
            lambda: dlpx.empty((n,), "uint8", device="cuda"), calls, reps))
        if torch is not None:
            r["torch.empty"] = attempt(lambda: 1e6 * per_call(
                lambda: torch.empty(n, dtype=torch.uint8, device="cuda"), calls, reps))
        else:
            r["torch.empty"] = peers.why_torch
    with tempfile.TemporaryDirectory(prefix="dlpx-bench-pool-") as d:
        exe, why = build_pool_bench(dlpx, d)
        for n in sizes:
            res[size_name(n)]["c.dlpx_pool"] = res[size_name(n)]["c.cuMemAlloc"] = why
        if exe is not None:
            r = subprocess.run([exe] + (["--quick"] if quick else []) + [str(n) for n in sizes],
                               capture_output=True, text=True, timeout=600)
            for line in r.stdout.splitlines():  # "<method> <bytes> <ns>" or "... n/a why"
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[0] in ("dlpx_pool", "cuMemAlloc"):
                    key = "c." + parts[0]
                    cell: Cell = (float(parts[2]) if parts[2] != "n/a"
                                  else "n/a: " + (parts[3] if len(parts) > 3 else "?"))
                    res.setdefault(size_name(int(parts[1])), {})[key] = cell
            if r.returncode != 0:
                print(f"bench_cuda_pool exited {r.returncode}: {r.stderr.strip()[:300]}")
    dlpx.cuda.empty_cache()
    return res


def print_pool(res: dict[str, Any]) -> None:
    rows = []
    for size, r in res.items():
        rows.append((f"Python dlpx.empty {size}", r["dlpx.empty"], "torch.empty(device=cuda)",
                     r["torch.empty"]))
    for size, r in res.items():
        ns = [c / 1000 if isinstance(c, float) else c for c in (r["c.dlpx_pool"],
                                                                 r["c.cuMemAlloc"])]
        rows.append((f"C dlpx_cuda_pool_alloc+free {size}", ns[0], "cuMemAlloc+cuMemFree (C)",
                     ns[1]))
    print_pairs("Device allocate+free, us per pair (fastest average; C rows: median)", "us",
                rows, False, "C rows from bench/bench_cuda_pool.c (ns there, us here)", digits=3)


# ---- main ----------------------------------------------------------------------------------

def versions(peers: Peers) -> dict[str, str]:
    from importlib.metadata import version
    out = {}
    for name in ("dlpx-cffi", "torch", "cupy-cuda13x", "cupy-cuda12x", "safetensors",
                 "fastsafetensors", "runai-model-streamer"):
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001 - not installed
            pass
    return out


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    p.add_argument("--size-gib", type=float, default=10.0,
                   help="the large safetensors file in GiB (default 10; 1 GiB is always run)")
    p.add_argument("--dir", default=None, help="where the files are written (default: temp dir)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    # Runs the dlpx-only rows against a driver double named by DLPX_LIBCUDA
    # (tests/fakecuda.c): exercises the table code on a machine with no GPU.
    p.add_argument("--fake-ok", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    import dlpx
    import dlpx.cuda
    if not dlpx.cuda.is_available():
        print(f"bench_cuda: no CUDA GPU ({dlpx.cuda.why_unavailable()}); nothing measured")
        return 0
    if os.environ.get("DLPX_LIBCUDA") and not args.fake_ok:
        print(f"bench_cuda: DLPX_LIBCUDA={os.environ['DLPX_LIBCUDA']} replaces the driver "
              "(a test double?); nothing measured (unset it, or pass --fake-ok)")
        return 0
    peers = Peers()
    quick = args.quick
    reps = 3 if quick else 7
    copy_sizes = [1 * MiB, 8 * MiB] if quick else [1 * MiB, 64 * MiB, 1 * GiB]
    file_sizes = [32 * MiB] if quick else [1 * GiB, int(args.size_gib * GiB)]
    chunk = 4 * MiB if quick else 64 * MiB
    calls = 200 if quick else 10000
    pool_sizes = [4 * KiB, 1 * MiB, 64 * MiB] if not quick else [4 * KiB, 1 * MiB]

    print(f"# dlpx CUDA benchmark: {dlpx.cuda.get_device_name()} "
          f"({dlpx.cuda.get_device_properties()['total_memory'] / GiB:.0f} GiB), driver "
          f"{dlpx.cuda.driver_version()}; {machine.cpu_name()} x{os.cpu_count()}; "
          f"dlpx {dlpx.__version__}; " + ", ".join(f"{k} {v}" for k, v in versions(peers).items()))
    for why in (peers.why_torch, peers.why_cupy):
        if why:
            print(f"# peers: {why}")
    print()
    t0 = time.perf_counter()
    results: dict[str, Any] = {"machine": machine.machine(_numpy_version()),
                               "gpu": dlpx.cuda.get_device_name(), "quick": quick}
    results["bandwidth"] = bw = bench_bandwidth(dlpx, peers, copy_sizes, reps)
    print_bandwidth(bw)
    top = bw[size_name(copy_sizes[-1])]
    limit = {f"dlpx {size_name(copy_sizes[-1])}": top["h2d_into.dlpx"],
             f"torch {size_name(copy_sizes[-1])}": top["h2d_into.torch"]}
    results["files"] = files = bench_files(dlpx, peers, file_sizes, chunk, reps, args.dir)
    print_files(files, limit)
    results["exchange_us"] = ex = bench_exchange(dlpx, peers, calls, reps)
    print_exchange(ex)
    results["pool"] = pool = bench_pool(dlpx, peers, pool_sizes, calls, reps, quick)
    print_pool(pool)
    print(f"(benchmark took {time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def _numpy_version() -> str:
    try:
        import numpy
        return numpy.__version__
    except ImportError:
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())
