"""Loading a tensor file: dlpx's loaders beside safetensors, torch.load,
fastsafetensors and runai-model-streamer, and beside the limits of this
machine (plain reads, memcpy), measured in the same run.  Prints a table
and writes JSON; never asserts on time.

    python bench/bench_files.py [--quick] [--size-mib N] [--repeat N]
        [--dir DIR] [--keep] [--no-cold] [--only KEY] [--json PATH]

The checkpoint: about 200 float32 tensors shaped like a small transformer
(16 layers of attention, MLP and norms, an embedding and an LM head),
--size-mib in all (default 1024; --quick: 16 MiB, one run), saved by
dlpx.save_file(checksum=True) as one file, as a 4-shard checkpoint with a
model.safetensors.index.json (Hugging Face's weight_map), and by
torch.save as a .pt file, in a new directory under --dir (default /tmp),
removed at the end unless --keep.

Each method is timed from the call until the first tensor is in hand
("first"), and until every tensor is in hand and every page of it was
touched ("all": one element per 4096 bytes is summed, since mapped files
load lazily).  GB/s = file bytes / all.  Best of --repeat runs (default
3).  The sums of the touched elements are compared with those of the saved
tensors, so a loader that returns wrong data is marked.  A peer that
fails is reported in its row ("n/a: why"); the run goes on.

Warm: every method in turn, each after one read of its files (page
cache).  Cold, after all the warm runs: before each run the files' pages
are evicted with posix_fadvise(POSIX_FADV_DONTNEED) (or, where pages stay
resident, /proc/sys/vm/drop_caches), checked with mincore; the method used
is printed, and there is no cold column when neither works.  O_DIRECT
reads ("direct") skip the page cache, so their warm numbers are cold ones.

The limits: preadv into pre-faulted memory with 1 and N threads (N =
os.cpu_count(), 16 MiB pieces), into fresh memory (np.empty each run)
with N threads, and memcpy (np.copyto, 1 thread).  CPU time taken by
other processes (and the hypervisor) while the rows ran is measured from
/proc/stat: rows measured on a busy machine are marked.
"""

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from functools import partial as P

import numpy as np

import dlpx
import machine as _machine  # bench/machine.py, beside this script
from shapes import shapes_for  # bench/shapes.py, beside this script

MiB = 1 << 20
PAGE = 4096
CHUNK = 16 * MiB
NCPU = os.cpu_count() or 1

clock = time.perf_counter
VERBOSE = [False]


def say(msg):
    """Progress, on stderr: with --verbose or when stderr is a terminal."""
    if VERBOSE[0] or sys.stderr.isatty():
        print(msg, file=sys.stderr, flush=True)


# ---- the checkpoint ----------------------------------------------------------------------


def touch_view(a):
    """One element per 4096 bytes of the array |a| (a flat strided view)."""
    flat = a.reshape(-1)
    return flat[::max(1, PAGE // flat.itemsize)]


def as_numpy(t):
    if isinstance(t, np.ndarray):
        return t
    if type(t).__module__.startswith("torch"):
        return t.detach().numpy()
    return np.from_dlpack(t)


def touch(t):
    """Reads every page of tensor |t|; returns the sum of what it read."""
    return float(np.add.reduce(touch_view(as_numpy(t)), dtype=np.float64))


def build(dirpath, total_bytes, seed=0):
    """Writes the checkpoint files; returns (info, reference sums, shapes)."""
    rng = np.random.default_rng(seed)
    shapes = shapes_for(total_bytes)
    sd = {}
    for name, shape in shapes:
        a = np.empty(shape, np.float32)
        rng.random(out=a.reshape(-1), dtype=np.float32)
        a -= 0.5
        sd[name] = a
    sums = {k: touch(v) for k, v in sd.items()}
    single = os.path.join(dirpath, "model.safetensors")
    dlpx.save_file(sd, single, checksum=True)
    # 4 shards of about equal bytes, in the tensors' order, and the HF index
    shard_dir = os.path.join(dirpath, "sharded")
    os.makedirs(shard_dir, exist_ok=True)
    total = sum(a.nbytes for a in sd.values())
    groups, acc = [[] for _ in range(4)], 0
    for name, a in sd.items():
        groups[min(3, acc * 4 // total)].append(name)
        acc += a.nbytes
    weight_map = {}
    shard_files = []
    for i, names in enumerate(groups):
        fn = f"model-{i + 1:05d}-of-00004.safetensors"
        dlpx.save_file({n: sd[n] for n in names}, os.path.join(shard_dir, fn), checksum=True)
        weight_map.update({n: fn for n in names})
        shard_files.append(os.path.join(shard_dir, fn))
    index = os.path.join(shard_dir, "model.safetensors.index.json")
    with open(index, "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    pt = os.path.join(dirpath, "model.pt")
    try:
        import torch
    except ImportError:  # no .pt file: the torch.load rows say so
        pt = None
    else:
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, pt)
        with open(pt, "rb+") as f:
            os.fsync(f.fileno())
    del sd
    gc.collect()
    info = {"single": single, "index": index, "shards": shard_files, "pt": pt,
            "tensors": len(shapes), "tensor_bytes": total,
            "single_bytes": os.path.getsize(single),
            "sharded_bytes": sum(os.path.getsize(p) for p in shard_files),
            "pt_bytes": os.path.getsize(pt) if pt else 0}
    return info, sums, shapes


# ---- the page cache ------------------------------------------------------------------------


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def resident(paths):
    """The fraction of the pages of |paths| in the page cache (mincore)."""
    have = total = 0
    for p in paths:
        n = os.path.getsize(p)
        if not n:
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            addr = _libc.mmap(None, n, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
            if addr in (None, ctypes.c_void_p(-1).value):
                return float("nan")
            try:
                pages = (n + PAGE - 1) // PAGE
                vec = (ctypes.c_ubyte * pages)()
                if _libc.mincore(addr, n, vec):
                    return float("nan")
                have += sum(b & 1 for b in bytes(vec))
                total += pages
            finally:
                _libc.munmap(addr, n)
        finally:
            os.close(fd)
    return have / total if total else 0.0


def warm(paths):
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.read(CHUNK):
                pass


class Evictor:
    """Evicts files from the page cache: posix_fadvise(DONTNEED), else
    drop_caches; .method says which works here (None: neither)."""

    def __init__(self, paths):
        self.paths = paths
        self.method, self.note = None, ""
        warm(paths)
        self._fadvise()
        got = resident(paths)
        if got <= 0.01:
            self.method = "posix_fadvise(POSIX_FADV_DONTNEED)"
        elif self._drop():
            got = resident(paths)
            if got <= 0.01:
                self.method = "echo 3 > /proc/sys/vm/drop_caches"
        self.residency = got
        if self.method is None:
            self.note = f"cannot evict: {got:.0%} of the pages stay resident"

    def _fadvise(self, paths=None):
        for p in paths or self.paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)

    @staticmethod
    def _drop():
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            return True
        except OSError:
            return False

    def __call__(self, paths=None):
        if self.method and self.method.startswith("posix"):
            self._fadvise(paths)
        elif self.method:
            self._drop()


# ---- the limits: plain reads and memcpy --------------------------------------------------


def _read_piece(fd, mv, off, file_off):
    n = len(mv)
    done = 0
    while done < n:
        got = os.preadv(fd, [mv[done:]], file_off + done)
        if got <= 0:
            raise OSError(f"short read at {file_off + done}")
        done += got


def plain_read(path, buf, threads, chunk=CHUNK):
    """Reads the whole file into the uint8 array |buf| with |threads|
    threads, |chunk| bytes per preadv."""
    n = os.path.getsize(path)
    mv = memoryview(buf).cast("B")[:n]
    fd = os.open(path, os.O_RDONLY)
    try:
        pieces = [(b, min(n, b + chunk)) for b in range(0, n, chunk)]
        if threads == 1:
            for b, e in pieces:
                _read_piece(fd, mv[b:e], b, b)
            return
        it = iter(pieces)
        lock = threading.Lock()

        def worker():
            while True:
                with lock:
                    job = next(it, None)
                if job is None:
                    return
                b, e = job
                _read_piece(fd, mv[b:e], b, b)
        with ThreadPoolExecutor(threads) as ex:
            for f in [ex.submit(worker) for _ in range(threads)]:
                f.result()
    finally:
        os.close(fd)


def faulted(nbytes):
    a = np.empty(nbytes, np.uint8)
    a.fill(1)
    return a


# ---- the methods ---------------------------------------------------------------------------


class Ctx:
    """What the methods share: the files, the reference sums, targets."""

    def __init__(self, files, sums, shapes):
        self.files, self.sums, self.shapes = files, sums, shapes
        self.targets_np = None
        self.module = None
        self.buf = None
        self.fresh = None

    def paths_for(self, bytes_key):
        f = self.files
        return {"single_bytes": [f["single"]], "sharded_bytes": f["shards"],
                "pt_bytes": [f["pt"]]}[bytes_key]


def _dict_loader(load, ctx):
    t0 = clock()
    d = load()
    t1 = clock()
    s = {k: touch(v) for k, v in d.items()}
    t2 = clock()
    return t1 - t0, t2 - t0, s, d


def _iter_loader(items):
    """|items| yields (name, tensor); each is touched as it comes."""
    t0 = clock()
    first = None
    s, keep = {}, []
    for name, t in items():
        if first is None:
            first = clock() - t0
        s[name] = touch(t)
        keep.append(t)
    return first, clock() - t0, s, keep


def m_dlpx(ctx, **kw):
    return lambda: _dict_loader(lambda: dlpx.load_file(ctx.files["single"], **kw), ctx)


def m_dlpx_sharded(ctx):
    return lambda: _dict_loader(lambda: dlpx.load_file(ctx.files["index"], mode="pread",
                                                       framework="numpy"), ctx)


def m_dlpx_safe_open(ctx):
    def items():
        with dlpx.safe_open(ctx.files["single"], framework="numpy") as f:
            for k in f.keys():
                yield k, f.get_tensor(k)
    return lambda: _iter_loader(items)


def m_dlpx_into_np(ctx, **kw):
    def run():
        if ctx.targets_np is None:
            ctx.targets_np = {}
            for name, shape in ctx.shapes:
                a = np.empty(shape, np.float32)
                a.fill(0)  # pre-faulted
                ctx.targets_np[name] = a
        tg = ctx.targets_np
        return _dict_loader(lambda: (dlpx.load_into(ctx.files["single"], tg, **kw), tg)[1], ctx)
    return run


def _module(shapes):
    import torch
    root = torch.nn.Module()
    for name, shape in shapes:
        *path, leaf = name.split(".")
        m = root
        for p in path:
            sub = getattr(m, p, None)
            if sub is None:
                sub = torch.nn.Module()
                m.add_module(p, sub)
            m = sub
        t = torch.empty(shape, dtype=torch.float32)
        t.zero_()  # pre-faulted
        m.register_parameter(leaf, torch.nn.Parameter(t, requires_grad=False))
    return root


def m_dlpx_into_torch(ctx):
    def run():
        if ctx.module is None:
            ctx.module = _module(ctx.shapes)
        mod = ctx.module
        return _dict_loader(lambda: (dlpx.load_into(ctx.files["single"], mod),
                                     mod.state_dict())[1], ctx)
    return run


def m_st_numpy(ctx, **kw):
    from safetensors.numpy import load_file
    return lambda: _dict_loader(lambda: load_file(ctx.files["single"], **kw), ctx)


def m_st_torch(ctx):
    from safetensors.torch import load_file
    return lambda: _dict_loader(lambda: load_file(ctx.files["single"]), ctx)


def m_st_safe_open(ctx):
    from safetensors import safe_open

    def items():
        with safe_open(ctx.files["single"], framework="np") as f:
            for k in f.keys():
                yield k, f.get_tensor(k)
    return lambda: _iter_loader(items)


def m_torch_load(ctx, **kw):
    import torch
    return lambda: _dict_loader(lambda: torch.load(ctx.files["pt"], **kw), ctx)


def m_fastsafetensors(ctx):
    from fastsafetensors import SafeTensorsFileLoader

    def run():
        loader = SafeTensorsFileLoader(None, "cpu", nogds=True)
        holder = []

        def items():
            loader.add_filenames({0: [ctx.files["single"]]})
            fb = loader.copy_files_to_device()
            holder.append(fb)
            for k in loader.get_keys():
                yield k, fb.get_tensor(k)
        try:
            return _iter_loader(items)
        finally:
            for fb in holder:
                fb.close()
            loader.close()
    return run


def m_runai(ctx):
    from runai_model_streamer import SafetensorsStreamer

    def run():
        with SafetensorsStreamer() as s:
            def items():
                s.stream_file(ctx.files["single"])
                yield from s.get_tensors()
            return _iter_loader(items)
    return run


def _limit(fn, prep=None):
    def run():
        if prep:
            prep()
        t0 = clock()
        fn()
        t = clock() - t0
        return t, t, None, None
    return run


def l_read(ctx, threads, fresh):
    path, n = ctx.files["single"], ctx.files["single_bytes"]

    def prep():  # the last run's fresh buffer is freed outside the timing
        ctx.fresh = None

    def fn():
        if fresh:
            ctx.fresh = np.empty(n, np.uint8)  # unfaulted: faults during the read
            plain_read(path, ctx.fresh, threads)
        else:
            if ctx.buf is None or len(ctx.buf) < n:
                ctx.buf = faulted(n)
            plain_read(path, ctx.buf, threads)
    return fn, prep


def l_memcpy(ctx):
    n = ctx.files["single_bytes"]
    state = {}

    def fn():
        if not state:
            state["a"], state["b"] = faulted(n), faulted(n)
        np.copyto(state["b"], state["a"])
    return fn


# (key, label, file bytes key, factory, limit key for "vs limit", cold?)
def methods(ctx):
    rows = [
        ("dlpx.mmap", "dlpx load_file mmap (numpy)", "single_bytes",
         P(m_dlpx, ctx, mode="mmap", framework="numpy"), "read_fresh"),
        ("dlpx.pread", "dlpx load_file pread (numpy, verify=None)", "single_bytes",
         P(m_dlpx, ctx, mode="pread", framework="numpy"), "read_fresh"),
        ("dlpx.pread.noverify", "dlpx load_file pread verify=False", "single_bytes",
         P(m_dlpx, ctx, mode="pread", framework="numpy", verify=False), "read_fresh"),
        ("dlpx.pread.verify", "dlpx load_file pread verify=True", "single_bytes",
         P(m_dlpx, ctx, mode="pread", framework="numpy", verify=True), "read_fresh"),
        ("dlpx.pread.torch", "dlpx load_file pread (torch)", "single_bytes",
         P(m_dlpx, ctx, mode="pread", framework="torch"), "read_fresh"),
        ("dlpx.direct", "dlpx load_file direct (numpy) [O_DIRECT]", "single_bytes",
         P(m_dlpx, ctx, mode="direct", framework="numpy"), "read_fresh"),
        ("dlpx.into.numpy", "dlpx load_into numpy (pre-faulted)", "single_bytes",
         P(m_dlpx_into_np, ctx), "read_faulted"),
        ("dlpx.into.noverify", "dlpx load_into numpy verify=False", "single_bytes",
         P(m_dlpx_into_np, ctx, verify=False), "read_faulted"),
        ("dlpx.into.torch", "dlpx load_into torch nn.Module", "single_bytes",
         P(m_dlpx_into_torch, ctx), "read_faulted"),
        ("dlpx.sharded", "dlpx load_file 4-shard index (pread)", "sharded_bytes",
         P(m_dlpx_sharded, ctx), "read_fresh"),
        ("dlpx.safe_open", "dlpx safe_open mmap, get_tensor each", "single_bytes",
         P(m_dlpx_safe_open, ctx), "read_fresh"),
        ("st.numpy", "safetensors.numpy.load_file", "single_bytes",
         P(m_st_numpy, ctx), "read_fresh"),
        ("st.numpy.pread", "safetensors.numpy.load_file pread", "single_bytes",
         P(m_st_numpy, ctx, backend="pread"), "read_fresh"),
        ("st.torch", "safetensors.torch.load_file", "single_bytes",
         P(m_st_torch, ctx), "read_fresh"),
        ("st.safe_open", "safetensors safe_open np, get_tensor each", "single_bytes",
         P(m_st_safe_open, ctx), "read_fresh"),
        ("torch.load", "torch.load", "pt_bytes",
         P(m_torch_load, ctx), "read_fresh"),
        ("torch.load.mmap", "torch.load mmap=True weights_only=True", "pt_bytes",
         P(m_torch_load, ctx, mmap=True, weights_only=True), "read_fresh"),
        ("fastsafetensors", "fastsafetensors CPU (nogds)", "single_bytes",
         P(m_fastsafetensors, ctx), "read_fresh"),
        ("runai", "runai-model-streamer SafetensorsStreamer", "single_bytes",
         P(m_runai, ctx), "read_fresh"),
    ]
    limits = [
        ("read_1", "limit: preadv 1 thread -> faulted", "single_bytes",
         P(_limit, *l_read(ctx, 1, False)), None),
        ("read_faulted", f"limit: preadv {NCPU} threads -> faulted", "single_bytes",
         P(_limit, *l_read(ctx, NCPU, False)), None),
        ("read_fresh", f"limit: preadv {NCPU} threads -> fresh np.empty", "single_bytes",
         P(_limit, *l_read(ctx, NCPU, True)), None),
        ("memcpy", "limit: memcpy np.copyto 1 thread", "single_bytes",
         P(_limit, l_memcpy(ctx)), None),
    ]
    return rows, limits


class Busy:
    """CPU time of this process and of the whole machine, to tell how much
    of the CPUs other processes took while something ran."""

    def __init__(self):
        self.t, self.own, self.all = clock(), self._own(), self._all()

    @staticmethod
    def _own():
        t = os.times()
        return t.user + t.system

    @staticmethod
    def _all():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def others(self, least=0.5):
        """The fraction of all CPUs that other processes (and the
        hypervisor: steal) used since made; None under |least| seconds,
        too short for /proc/stat's clock ticks."""
        wall = clock() - self.t
        a = self._all()
        if a is None or self.all is None or wall < least:
            return None
        return min(1.0, max(0.0, (a - self.all) - (self._own() - self.own)) / (wall * NCPU))

    def cpu(self):
        return self._own() - self.own


def measure(fn, repeat, evict=None, expect=None, warmup=False):
    """Best of |repeat| runs of |fn| -> a result dict (or the error);
    |warmup|: one untimed run first (imports, first calls)."""
    if warmup:
        fn()
        gc.collect()
    firsts, alls, cpus, bad = [], [], [], None
    phase = Busy()
    for _ in range(repeat):
        gc.collect()
        if evict:
            evict()
        b = Busy()
        first, total, sums, keep = fn()
        cpus.append(b.cpu())
        del keep
        if expect is not None and sums is not None and bad is None:
            if set(sums) != set(expect):
                bad = f"wrong names ({len(sums)} tensors, expected {len(expect)})"
            else:
                wrong = [k for k in expect if sums[k] != expect[k]]
                if wrong:
                    bad = f"wrong data in {len(wrong)} tensors (e.g. {wrong[0]})"
        firsts.append(first)
        alls.append(total)
        gc.collect()
    return {"first_s": min(firsts), "all_s": min(alls), "runs_all_s": alls,
            "runs_first_s": firsts, "cpu_s": min(cpus), "runs_cpu_s": cpus,
            "others_busy": phase.others(), "check": bad or "ok"}


def _phase(r, phase, fn, repeat, ev, expect, warmup=False):
    try:
        m = measure(fn, repeat, ev, expect, warmup)
        m["gbps"] = r["bytes"] / m["all_s"] / 1e9
        r[phase] = m
        say(f"  {phase} {r['label']}: first {m['first_s'] * 1e3:.1f} ms, all "
              f"{m['all_s']:.3f} s, {m['gbps']:.2f} GB/s [{m['check']}]")
    except Exception as e:  # a failing method is reported, never ends the run
        r[phase + "_error"] = f"{type(e).__name__}: {e}"
        say(f"  {phase} {r['label']}: n/a: {r[phase + '_error']}")
        if os.environ.get("BENCH_TRACE"):
            traceback.print_exc()


def run_all(ctx, repeat, only, evictor, do_cold, warmup):
    """Every method warm, then every method cold: cold runs change the page
    cache (its folio sizes, its LRU lists) and free memory in ways that
    would otherwise leak into the next method's warm runs."""
    rows, limits = methods(ctx)
    limit_keys = {k for k, *_ in limits}
    results, fns = {}, {}
    for key, label, bytes_key, factory, limit_key in limits + rows:
        if only and not any(o in key for o in only) and key not in ("read_fresh", "read_faulted"):
            continue
        r = results[key] = {"key": key, "label": label, "bytes": ctx.files[bytes_key],
                            "limit": limit_key, "is_limit": key in limit_keys}
        try:
            if bytes_key == "pt_bytes" and not ctx.files["pt"]:
                raise ImportError("no torch to write the .pt file")
            fn = factory()
        except Exception as e:  # a peer that cannot even start
            r["error"] = f"{type(e).__name__}: {e}"
            say(f"  {label}: n/a: {r['error']}")
            continue
        paths = ctx.paths_for(bytes_key)
        # read once more: a file that other methods did not read for a while
        # may have lost pages to reclaim (e.g. DAMON's pageout of idle pages)
        warm(paths)
        _phase(r, "warm", fn, repeat, None, None if r["is_limit"] else ctx.sums, warmup)
        if do_cold and key != "memcpy":
            fns[key] = (fn, paths)
        del fn
        gc.collect()
    for key, (fn, paths) in fns.items():
        r = results[key]
        _phase(r, "cold", fn, repeat, P(evictor, paths), None if r["is_limit"] else ctx.sums)
        gc.collect()
    fns.clear()
    ctx.targets_np = ctx.module = ctx.buf = None
    ctx.fresh = None
    gc.collect()
    return results


# ---- the report ------------------------------------------------------------------------------


def machine():
    cpu = _machine.cpu_name()
    thp = ""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read().strip()
        thp = thp[thp.index("[") + 1:thp.index("]")] if "[" in thp else thp
    except OSError:
        pass
    return {"cpu": cpu, "cores": NCPU, "python": platform.python_version(),
            "numpy": np.__version__, "kernel": platform.release(), "thp": thp}


def versions():
    out = {"dlpx": dlpx.__version__}
    for mod in ("torch", "safetensors", "fastsafetensors", "runai_model_streamer"):
        try:
            from importlib.metadata import version
            out[mod] = version(mod.replace("_", "-"))
        except Exception:
            try:
                out[mod] = __import__(mod).__version__
            except Exception as e:
                out[mod] = f"n/a ({type(e).__name__})"
    return out


def _gbps(r, phase):
    m = r.get(phase)
    return m["gbps"] if m else None


BUSY = 0.10  # other processes' share of the CPUs above which a row is marked


def _note(r):
    notes = []
    if not r["is_limit"] and r["warm"]["check"] != "ok":
        notes.append(r["warm"]["check"])
    busy = [r[p]["others_busy"] for p in ("warm", "cold")
            if p in r and r[p].get("others_busy") is not None]
    if busy and max(busy) > BUSY:
        notes.append(f"busy: others took {max(busy):.0%} of the CPUs")
    return "; ".join(notes) or ("" if r["is_limit"] else "ok")


def print_table(results, cold_method):
    base = results.get("st.numpy", {})
    head = (f"{'method':44s} {'first ms':>9s} {'all s':>7s} {'GB/s':>6s} {'vs st.np':>8s} "
            f"{'vs limit':>9s} {'cpu s':>6s} | {'cold s':>6s} {'GB/s':>6s} {'vs lim':>7s}  check")
    print(head)
    print("-" * len(head))
    for key, r in results.items():
        label = r["label"]
        if "error" in r or "warm" not in r:
            err = r.get("error") or r.get("warm_error", "")
            print(f"{label:44s} n/a: {err}"[:220])
            continue
        w = r["warm"]
        bw = _gbps(base, "warm")
        vs_st = f"{w['gbps'] / bw:7.2f}x" if bw and not r["is_limit"] else ""
        lim = results.get(r["limit"]) if r["limit"] else None
        lw = _gbps(lim, "warm") if lim else None
        tag = {"read_fresh": "F", "read_faulted": "P"}.get(r["limit"], "")
        vs_lim = f"{w['gbps'] / lw * 100:6.0f}% {tag}" if lw else ""
        c = r.get("cold")
        if c:
            lc = _gbps(lim, "cold") if lim else None
            pct = f"{c['gbps'] / lc * 100:6.0f}%" if lc else ""
            cold = f"{c['all_s']:6.3f} {c['gbps']:6.2f} {pct:>7s}"
        else:
            cold = f"{('n/a: ' + r['cold_error'])[:22] if 'cold_error' in r else '':>22s}"
        first = "" if r["is_limit"] else f"{w['first_s'] * 1e3:9.1f}"
        print(f"{label:44s} {first:>9s} {w['all_s']:7.3f} {w['gbps']:6.2f} {vs_st:>8s} "
              f"{vs_lim:>9s} {w['cpu_s']:6.3f} | {cold}  {_note(r)}")
    print()
    print("first ms: call -> first tensor in hand; all s: call -> every tensor in hand and every "
          "page touched (best of the runs);")
    print("GB/s = file bytes / all s; vs st.np: GB/s over safetensors.numpy.load_file's; vs limit: "
          "GB/s over the read limit's")
    print("(F: preadv into fresh memory, P: preadv into pre-faulted memory, N threads); cpu s: "
          "this process's CPU time (all threads)")
    print(f"cold: {cold_method}")


def targets(results):
    def g(k, phase="warm"):
        r = results.get(k)
        return r[phase]["gbps"] if r and phase in r else None

    def t(k, what="all_s", phase="warm"):
        r = results.get(k)
        return r[phase][what] if r and phase in r else None
    out = []

    def ratio(a, b):
        return a / b if a and b else None

    def add(name, value, fmt, ok, target, ceiling=None):
        o = {"target": name, "value": value, "want": target, "ceiling": ceiling}
        if value is None:
            o.update(verdict="n/a", text="n/a")
        else:
            o.update(verdict="PASS" if ok(value) else "MISS", text=fmt.format(value))
            if ceiling is not None:
                o["ceiling_text"] = fmt.format(ceiling)
        out.append(o)
    add("dlpx mmap / safetensors safe_open: all touched, time",
        ratio(t("dlpx.mmap"), t("st.safe_open")), "{:.2f}x", lambda v: v <= 1.0, "<= 1.0x")
    add("dlpx mmap / safetensors safe_open: first tensor, time",
        ratio(t("dlpx.mmap", "first_s"), t("st.safe_open", "first_s")), "{:.2f}x",
        lambda v: v <= 1.0, "<= 1.0x")
    add("dlpx mmap / safetensors.torch.load_file (mmap): time",
        ratio(t("dlpx.mmap"), t("st.torch")), "{:.2f}x", lambda v: v <= 1.0, "<= 1.0x")
    add("dlpx pread / safetensors.numpy.load_file: speed",
        ratio(g("dlpx.pread"), g("st.numpy")), "{:.2f}x", lambda v: v >= 3.0, ">= 3x",
        ratio(g("read_fresh"), g("st.numpy")))
    for k, what in (("dlpx.into.numpy", "numpy, verify=None"),
                    ("dlpx.into.noverify", "numpy, verify=False"),
                    ("dlpx.into.torch", "torch nn.Module")):
        add(f"dlpx into ({what}) / {NCPU}-thread read into faulted",
            ratio(g(k), g("read_faulted")), "{:.0%}", lambda v: v >= 0.8, ">= 80%")
    add("dlpx pread verify=True / verify=False: time",
        ratio(t("dlpx.pread.verify"), t("dlpx.pread.noverify")), "{:.2f}x",
        lambda x: x <= 1.10, "<= 1.10x")
    print("targets (from the numbers above; informational, never asserted):")
    for o in out:
        ceil = f"  (best possible here: {o['ceiling_text']})" if "ceiling_text" in o else ""
        print(f"  {o['verdict']:4s}  {o['target']:58s} {o['text']:>7s}  target "
              f"{o['want']}{ceil}")
    return out


def main():
    ap = argparse.ArgumentParser(description="Loading tensor files: dlpx beside its peers and "
                                 "the limits of the machine, in one run.")
    ap.add_argument("--quick", action="store_true", help="CI smoke run: 16 MiB, 1 repeat")
    ap.add_argument("--size-mib", type=int, default=None, help="checkpoint size (default 1024)")
    ap.add_argument("--repeat", type=int, default=None, help="best of N runs (default 3)")
    ap.add_argument("--dir", default=None, help="where to write the files (default a new "
                    "directory under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache runs")
    ap.add_argument("--only", action="append", default=[],
                    help="run only methods whose key contains this (repeatable)")
    ap.add_argument("--json", default="bench-files.json", help="where to write the results")
    ap.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = ap.parse_args()
    VERBOSE[0] = args.verbose
    size_mib = args.size_mib or (16 if args.quick else 1024)
    repeat = args.repeat or (1 if args.quick else 3)

    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
        workdir = tempfile.mkdtemp(prefix="dlpx-bench-files-", dir=args.dir)
    else:
        workdir = tempfile.mkdtemp(prefix="dlpx-bench-files-", dir="/tmp")
    t_start = clock()
    try:
        info = machine()
        vers = versions()
        say(f"building {size_mib} MiB checkpoint in {workdir} ...")
        files, sums, shapes = build(workdir, size_mib * MiB)
        paths = [files["single"]] + files["shards"] + ([files["pt"]] if files["pt"] else [])
        evictor = Evictor(paths)
        do_cold = evictor.method is not None and not args.no_cold
        cold_method = (evictor.method if do_cold else
                       ("skipped (--no-cold)" if args.no_cold else f"n/a: {evictor.note}"))
        if do_cold:
            cold_method += f" before each run (residency after eviction {evictor.residency:.1%})"
        ctx = Ctx(files, sums, shapes)
        busy = Busy()
        # small files: first calls (imports, caches) would weigh on one run
        results = run_all(ctx, repeat, args.only, evictor, do_cold, warmup=size_mib < 256)
        others = busy.others()

        print()
        print(f"dlpx {vers['dlpx']} tensor-file benchmark: {info['cpu']}, {info['cores']} cores, "
              f"kernel {info['kernel']}, THP {info['thp']}")
        print("peers: " + ", ".join(f"{k} {v}" for k, v in vers.items() if k != "dlpx"))
        print(f"checkpoint: {files['tensors']} float32 tensors, {files['tensor_bytes'] / MiB:.0f} "
              f"MiB ({files['single_bytes']} bytes in model.safetensors, 4 shards, "
              f"{files['pt_bytes']} bytes in model.pt); best of {repeat}; warm page cache "
              f"unless 'cold'; {NCPU} threads for the N-thread limits")
        if others is not None:
            print(f"other processes took {others:.0%} of the CPUs during the measurements" +
                  (" (a busy machine: the times are not reliable)" if others > BUSY else ""))
        print()
        print_table(results, cold_method)
        print()
        tg = targets(results)
        if size_mib < 256:
            print(f"  ({size_mib} MiB: too small a checkpoint for these to mean much; "
                  "run without --quick)")
        out = {"machine": info, "versions": vers, "size_mib": size_mib, "repeat": repeat,
               "files": {k: v for k, v in files.items() if not isinstance(v, list)},
               "cold_method": cold_method, "others_busy": others, "results": results,
               "targets": tg,
               "elapsed_s": clock() - t_start, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        path = os.path.abspath(args.json)
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
        print(f"\nwrote {path} ({clock() - t_start:.0f} s in all)")
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
