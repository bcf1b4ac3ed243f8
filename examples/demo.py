"""dlpx demo: one buffer travels NumPy -> dlpx -> PyTorch -> JAX and back
without a single copy, and the per-call cost of each hop is shown beside the
frameworks' own paths.

    python examples/demo.py
"""

import os
import sys
import timeit

import numpy as np

import dlpx


def hr(title):
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)))


def main():
    import jax
    import torch

    print(f"dlpx {dlpx.__version__}: libdlpx {'.'.join(map(str, dlpx.LIBRARY_VERSION))} "
          f"loaded with cffi from {dlpx.library_path}")
    print(f"NumPy {np.__version__}, PyTorch {torch.__version__}, JAX {jax.__version__}, "
          f"Python {sys.version.split()[0]}")

    hr("1. One buffer, five libraries, no copy")
    # JAX's CPU backend aliases only 64-byte aligned memory; NumPy aligns to
    # 16, dlpx to 64.  So the NumPy array starts out in dlpx-allocated memory.
    a = np.from_dlpack(dlpx.empty((1024, 1024), "float32"))
    a[...] = np.arange(a.size, dtype=np.float32).reshape(a.shape)
    ptr = a.ctypes.data
    t = dlpx.from_dlpack(a)                  # NumPy  -> dlpx
    p = torch.from_dlpack(t)                 # dlpx   -> PyTorch
    j = jax.dlpack.from_dlpack(p)            # PyTorch -> JAX
    p2 = torch.from_dlpack(j)                # JAX    -> PyTorch
    t2 = dlpx.from_dlpack(p2)                # PyTorch -> dlpx (DLPack C exchange API)
    a2 = np.from_dlpack(t2)                  # dlpx   -> NumPy
    hops = [("numpy", ptr), ("dlpx", t.data_ptr), ("torch", p.data_ptr()),
            ("jax", j.unsafe_buffer_pointer()), ("torch", p2.data_ptr()), ("dlpx", t2.data_ptr),
            ("numpy", a2.ctypes.data)]
    for name, addr in hops:
        print(f"  {name:6s} data at {addr:#x} {'(same memory)' if addr == ptr else '(COPY!)'}")
    ok = all(addr == ptr for _, addr in hops)
    a[3, 5] = -1.0                           # write once, seen everywhere
    seen = [float(p[3, 5]), float(j[3, 5]), float(np.from_dlpack(t)[3, 5]), float(a2[3, 5])]
    print(f"  wrote a[3, 5] = -1 in NumPy; torch, jax, dlpx and NumPy again read {seen}")
    ok = ok and seen == [-1.0] * 4

    hr("2. Views stay views")
    v = t[::2, 100:0:-3].T                  # strided, reversed, transposed: still no copy
    print(f"  t[::2, 100:0:-3].T -> {v}")
    nv = np.from_dlpack(v)
    print(f"  NumPy sees strides {nv.strides} (bytes), shares memory: "
          f"{np.shares_memory(nv, a)}")
    try:
        torch.from_dlpack(v)
    except BufferError as exc:
        print(f"  torch.from_dlpack(view with negative strides) -> BufferError: {exc}")
    print(f"  v.torch() makes the copy PyTorch needs: {tuple(v.torch().shape)}")
    ok = ok and np.shares_memory(nv, a)

    hr("3. Read-only data stays read-only")
    r = dlpx.frombuffer(bytes(range(8)), "uint8")
    nr = np.from_dlpack(r)
    print(f"  dlpx.frombuffer(bytes) readonly={r.readonly}; NumPy array writeable="
          f"{nr.flags.writeable}")
    try:
        r.__dlpack__()
    except BufferError as exc:
        print(f"  a legacy (pre-1.0) consumer is refused: {exc}")
    ok = ok and not nr.flags.writeable

    hr("4. Per-call cost (us, median of 7 x 5000 calls, import + release)")
    small = np.zeros((16, 16), np.float32)
    ts = torch.zeros(16, 16)
    ds = dlpx.from_dlpack(small)
    g = dict(np=np, torch=torch, dlpx=dlpx, small=small, ts=ts, ds=ds)

    def us(stmt):
        runs = sorted(timeit.repeat(stmt, globals=g, number=5000, repeat=7))
        return runs[3] / 5000 * 1e6

    rows = [
        ("NumPy   <- dlpx", "np.from_dlpack(ds)", "NumPy   <- PyTorch", "np.from_dlpack(ts)"),
        ("PyTorch <- dlpx", "torch.from_dlpack(ds)", "PyTorch <- NumPy", "torch.from_dlpack(small)"),
        ("dlpx    <- NumPy", "dlpx.from_dlpack(small)", "PyTorch <- NumPy", "torch.from_dlpack(small)"),
        ("dlpx    <- PyTorch", "dlpx.from_dlpack(ts)", "NumPy   <- PyTorch", "np.from_dlpack(ts)"),
    ]
    print(f"  {'through dlpx':22s} {'us':>6s}   {'native path':22s} {'us':>6s}  ratio")
    for label, stmt, plabel, pstmt in rows:
        x, y = us(stmt), us(pstmt)
        print(f"  {label:22s} {x:6.2f}   {plabel:22s} {y:6.2f}  {x / y:5.2f}x")

    ok = tensor_files() and ok
    ok = sharing() and ok

    stats = dlpx.stats()
    del t, t2, v, r, ds, p, p2, j, a2, nv, nr
    print(f"\nlibdlpx counters: {stats['storages_live']} storages, {stats['exports_live']} exports "
          f"live before release; {stats['foreign_deleters_run']} foreign deleters run")
    print("\nOK: every hop shared one buffer" if ok else "\nFAILED: a hop copied or lost data")
    return 0 if ok else 1


def tensor_files():
    """A PyTorch model saved with dlpx, loaded by every mode and by the
    reference safetensors package, then read straight into a fresh model."""
    import tempfile
    import time

    import torch

    hr("5. Tensor files (safetensors format): save, load every way, verify")
    torch.manual_seed(0)

    def model():
        return torch.nn.Sequential(torch.nn.Embedding(4096, 512), torch.nn.LayerNorm(512),
                                   torch.nn.Linear(512, 4096))

    net = model()
    x = torch.arange(16)
    want = net(x)
    ok = True
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.safetensors")
        t0 = time.perf_counter()
        dlpx.save_file(net.state_dict(), path, {"format": "pt"})
        size = os.path.getsize(path)
        print(f"  saved {len(net.state_dict())} tensors, {size / 2**20:.1f} MiB, with checksums, "
              f"crash-safe, in {1e3 * (time.perf_counter() - t0):.0f} ms")
        for mode in ("mmap", "pread", "direct"):
            t0 = time.perf_counter()
            sd = dlpx.load_file(path, mode=mode, framework="pt")
            ms = 1e3 * (time.perf_counter() - t0)
            fresh = model()
            fresh.load_state_dict(sd)
            same = torch.equal(fresh(x), want)
            ok = ok and same
            print(f"  load_file(mode={mode!r:9s}) {ms:6.1f} ms   model outputs equal: {same}")
        fresh = model()
        t0 = time.perf_counter()
        missing, unexpected = dlpx.load_into(path, fresh)
        ms = 1e3 * (time.perf_counter() - t0)
        same = torch.equal(fresh(x), want) and not missing and not unexpected
        ok = ok and same
        print(f"  load_into(path, model)    {ms:6.1f} ms   model outputs equal: {same}")
        try:
            import safetensors.torch as reference
            same = all(torch.equal(v, net.state_dict()[k])
                       for k, v in reference.load_file(path).items())
            print(f"  the reference safetensors package reads dlpx's file: {same}")
            ok = ok and same
        except ImportError:
            print("  (safetensors not installed: reference check skipped)")
        with dlpx.safe_open(path, framework="np") as f:
            part = f.get_slice("0.weight")[100:104, :3]
            print(f"  safe_open(...).get_slice('0.weight')[100:104, :3] -> shape {part.shape}, "
                  f"metadata {f.metadata()}")
        data = bytearray(open(path, "rb").read())
        data[-1000] ^= 1
        bad = os.path.join(d, "bad.safetensors")
        open(bad, "wb").write(bytes(data))
        try:
            dlpx.load_file(bad, mode="pread")
            print("  a flipped bit went unnoticed")
            ok = False
        except ValueError as exc:
            print(f"  one flipped bit: ValueError: {str(exc)[:96]}...")
    return ok


def _memfd_pss_kib():
    """This process's share (PSS) of the dlpx segments it maps."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                inside = "memfd:dlpx" in line
            elif inside and head == "Pss:":
                total += int(line.split()[1])
    return total


def _worker(mh, x, write, q, measure, done):
    """A worker: load the shared model (timed), run it, maybe write into its
    weights in place; report the output, the load time, and (once every
    worker holds the model) its share of the segment's pages."""
    import time

    import torch
    t0 = time.perf_counter()
    net = mh.load()
    ms = (time.perf_counter() - t0) * 1e3
    with torch.no_grad():
        if write:
            for p in net.parameters():
                p.mul_(2)
        y = net(x)
    q.put((write, y, ms))
    measure.wait()
    q.put(_memfd_pss_kib())
    done.wait()


def _run_workers(ctx, mh, x, writes):
    q, measure, done = ctx.Queue(), ctx.Event(), ctx.Event()
    ps = [ctx.Process(target=_worker, args=(mh, x, w, q, measure, done)) for w in writes]
    for p in ps:
        p.start()
    out = [q.get(timeout=120) for _ in ps]
    measure.set()
    pss = sum(q.get(timeout=120) for _ in ps) * 1024
    done.set()
    for p in ps:
        p.join(60)
    return out, pss


def sharing():
    """One model, four worker processes, one copy of its weights; a worker
    that writes into them changes only its own pages."""
    import multiprocessing as mp
    import pickle

    import torch

    import dlpx.torch

    hr("6. One model shared by 4 worker processes (sealed memfd, zero copy)")
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(8)]).eval()
    net.requires_grad_(False)
    size = sum(p.nbytes for p in net.parameters())
    x = torch.randn(2, 2048)
    want = net(x)
    ctx = mp.get_context("spawn")
    with dlpx.torch.share_module(net) as mh:
        print(f"  share_module: {size / 2**20:.0f} MiB in one sealed segment; the handle "
              f"pickles to {len(pickle.dumps(mh)) / 1024:.0f} KiB")
        got, pss = _run_workers(ctx, mh, x, [False] * 4)
        same = all(torch.equal(y, want) for _, y, _ in got)
        print(f"  4 workers: outputs identical {same}; load() {min(m for _, _, m in got):.2f} ms; "
              f"the 4 together hold {pss / size:.2f}x the model's pages (a copy each: 4x)")
        got, _ = _run_workers(ctx, mh, x, [True, False])
        isolated = all(torch.equal(y, want) != w for w, y, _ in got)
        print(f"  a worker doubled its weights in place; another still computes the "
              f"original: {isolated}")
    return same and isolated


if __name__ == "__main__":
    sys.exit(main())
