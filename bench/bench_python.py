"""Per-call cost of DLPack exchanges through dlpx beside the native peer
paths, measured in the same run.  Prints a table and writes JSON; never
asserts on time.

    python bench/bench_python.py [--quick] [--json PATH]

Each row times two paths, alternately, many repetitions each (this reduces
the effect of a noisy machine), and reports the median and the minimum of
the per-repetition means, in microseconds per call, and their ratio.  Every
call is a full import (or export) plus the release of what it produced.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import timeit

import numpy as np

import dlpx
import machine as _machine  # bench/machine.py, beside this script


def per_call_us(stmt, glb, number):
    return timeit.Timer(stmt, globals=glb).timeit(number) / number * 1e6


def compare(label, target, a_stmt, b_stmt, glb, number, repeats):
    """Times a (dlpx) against b (peer), interleaved."""
    per_call_us(a_stmt, glb, max(number // 10, 1))  # warm up
    per_call_us(b_stmt, glb, max(number // 10, 1))
    ra, rb = [], []
    for _ in range(repeats):
        ra.append(per_call_us(a_stmt, glb, number))
        rb.append(per_call_us(b_stmt, glb, number))
    ma, mb = statistics.median(ra), statistics.median(rb)
    return {
        "row": label, "dlpx": a_stmt, "peer": b_stmt,
        "dlpx_us_median": ma, "peer_us_median": mb, "ratio_median": ma / mb,
        "dlpx_us_min": min(ra), "peer_us_min": min(rb), "ratio_min": min(ra) / min(rb),
        "target": target,
    }


def _sizes(label, stmt, gs, gb, number, repeats):
    per_call_us(stmt, gs, max(number // 10, 1))
    per_call_us(stmt, gb, max(number // 10, 1))
    rs, rb = [], []
    for _ in range(repeats):
        rs.append(per_call_us(stmt, gs, number))
        rb.append(per_call_us(stmt, gb, number))
    ms, mb = statistics.median(rs), statistics.median(rb)
    return {"row": label, "stmt": stmt, "small_us_median": ms, "big_us_median": mb,
            "ratio_median": mb / ms, "small_us_min": min(rs), "big_us_min": min(rb),
            "ratio_min": min(rb) / min(rs), "target": "within 10%"}


def machine():
    return _machine.machine(np.__version__)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions (a smoke run)")
    ap.add_argument("--json", default="bench_python.json", help="where to write the results")
    args = ap.parse_args()
    number, repeats = (2000, 3) if args.quick else (20000, 15)

    import torch
    info = machine()
    info["torch"] = torch.__version__
    info["dlpx"] = dlpx.__version__

    a = np.zeros((16, 16), np.float32)                 # 1 KiB
    tt = torch.zeros(16, 16)
    d = dlpx.from_dlpack(a)
    g = {"np": np, "torch": torch, "dlpx": dlpx, "a": a, "tt": tt, "d": d}

    rows = [
        compare("1. np.from_dlpack(dlpx)  vs  np.from_dlpack(torch)", "<= 1.00x",
                "np.from_dlpack(d)", "np.from_dlpack(tt)", g, number, repeats),
        compare("2. torch.from_dlpack(dlpx)  vs  torch.from_dlpack(numpy)", "<= 1.25x",
                "torch.from_dlpack(d)", "torch.from_dlpack(a)", g, number, repeats),
        compare("3. dlpx.from_dlpack(numpy)  vs  torch.from_dlpack(numpy)", "<= 1.25x",
                "dlpx.from_dlpack(a)", "torch.from_dlpack(a)", g, number, repeats),
    ]

    # The DLPack C exchange API lanes.
    from dlpx import _consume
    lanes = []
    if hasattr(torch.Tensor, "__dlpack_c_exchange_api__"):
        def via_dlpack(x):  # the same import, with the exchange lane switched off
            saved = _consume._lanes.get(type(x))
            _consume._lanes[type(x)] = None
            try:
                return dlpx.from_dlpack(x)
            finally:
                _consume._lanes[type(x)] = saved
        g["via_dlpack"] = via_dlpack
        _consume._lanes.pop(torch.Tensor, None)
        lanes.append(compare(
            "consumer: dlpx.from_dlpack(torch): exchange API  vs  __dlpack__ lane", "faster",
            "dlpx.from_dlpack(tt)", "via_dlpack(tt)", g, number, repeats))
    # As producer: a consumer calling dlpx's table (through ctypes with the
    # GIL held, as from pure Python) against one using __dlpack__.
    import ctypes
    get = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", ctypes.pythonapi))  # a private prototype
    table = get(dlpx.Tensor.__dlpack_c_exchange_api__, b"dlpack_exchange_api")
    from_py = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.POINTER(ctypes.c_void_p))(
        ctypes.c_void_p.from_address(table + 24).value)
    out = ctypes.c_void_p()
    out_ref = ctypes.byref(out)
    DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    deleters = {}  # deleter address -> callable, made once

    def table_import(x):
        from_py(x, out_ref)
        m = out.value
        fn = ctypes.c_void_p.from_address(m + 16).value
        call = deleters.get(fn)
        if call is None:
            call = deleters[fn] = DELETER(fn)
        call(m)

    def capsule_import(x):
        return dlpx.from_dlpack(x.__dlpack__(max_version=(1, 3)))
    g.update(table_import=table_import, capsule_import=capsule_import)
    lanes.append(compare(
        "producer: dlpx table (ctypes)  vs  dlpx.__dlpack__ + capsule consume", "faster",
        "table_import(d)", "capsule_import(d)", g, number, repeats))

    # Views and creation: each a new tensor object over the same (or new)
    # memory, beside NumPy's own operation.
    g.update(buf=bytearray(1024), d3=dlpx.zeros((4, 8, 8)), a3=np.zeros((4, 8, 8), np.float32))
    views = [
        compare("t[1:, ::2]  vs  numpy", "", "d[1:, ::2]", "a[1:, ::2]", g, number, repeats),
        compare("t.T  vs  numpy", "", "d.T", "a.T", g, number, repeats),
        compare("t.reshape(-1)  vs  numpy", "", "d.reshape(-1)", "a.reshape(-1)", g, number,
                repeats),
        compare("t.permute(2, 0, 1)  vs  numpy transpose", "", "d3.permute(2, 0, 1)",
                "a3.transpose(2, 0, 1)", g, number, repeats),
        compare("dlpx.zeros((16, 16))  vs  numpy", "", "dlpx.zeros((16, 16))",
                "np.zeros((16, 16), np.float32)", g, number, repeats),
        compare("dlpx.frombuffer(1 KiB)  vs  numpy", "", "dlpx.frombuffer(buf, 'uint8')",
                "np.frombuffer(buf, np.uint8)", g, number, repeats),
        compare("t.shape (cached)  vs  numpy", "", "d.shape", "a.shape", g, number, repeats),
    ]

    # O(1): 1 KiB against 1 GiB through each path.
    big_np = np.empty(2**28, np.float32)               # 1 GiB
    big_d = dlpx.from_dlpack(big_np)
    big_t = torch.from_dlpack(big_d)
    gs = dict(g, x_np=a, x_d=d, x_t=tt)
    gb = dict(g, x_np=big_np, x_d=big_d, x_t=big_t)
    sizes = [
        _sizes("np.from_dlpack(dlpx)", "np.from_dlpack(x_d)", gs, gb, number, repeats),
        _sizes("torch.from_dlpack(dlpx)", "torch.from_dlpack(x_d)", gs, gb, number, repeats),
        _sizes("dlpx.from_dlpack(numpy)", "dlpx.from_dlpack(x_np)", gs, gb, number, repeats),
        _sizes("dlpx.from_dlpack(torch)", "dlpx.from_dlpack(x_t)", gs, gb, number, repeats),
    ]
    del big_t, big_d, big_np
    gc.collect()

    print(f"dlpx {dlpx.__version__} Python benchmark: {info['cpu']}, {info['cores']} cores, "
          f"Python {info['python']}, NumPy {info['numpy']}, PyTorch {info['torch']}")
    print(f"{number} calls x {repeats} repetitions per path, interleaved; us per call "
          "(import or export + release); ratio = dlpx / peer")
    print()
    head = f"{'path':60s} {'dlpx':>8s} {'peer':>8s} {'ratio':>7s} {'min-ratio':>9s}  target"
    print(head)
    print("-" * len(head))
    for r in rows + lanes:
        print(f"{r['row']:60s} {r['dlpx_us_median']:8.2f} {r['peer_us_median']:8.2f} "
              f"{r['ratio_median']:6.2f}x {r['ratio_min']:8.2f}x  {r['target']}")
    print()
    head = f"{'views and creation':60s} {'dlpx':>8s} {'numpy':>8s} {'ratio':>7s} {'min-ratio':>9s}"
    print(head)
    print("-" * len(head))
    for r in views:
        print(f"{r['row']:60s} {r['dlpx_us_median']:8.2f} {r['peer_us_median']:8.2f} "
              f"{r['ratio_median']:6.2f}x {r['ratio_min']:8.2f}x")
    print()
    head = f"{'O(1) in size: path':60s} {'1 KiB':>8s} {'1 GiB':>8s} {'ratio':>7s} {'min-ratio':>9s}  target"
    print(head)
    print("-" * len(head))
    for r in sizes:
        print(f"{r['row']:60s} {r['small_us_median']:8.2f} {r['big_us_median']:8.2f} "
              f"{r['ratio_median']:6.2f}x {r['ratio_min']:8.2f}x  {r['target']}")
    result = {"machine": info, "number": number, "repeats": repeats, "rows": rows,
              "exchange_api": lanes, "views": views, "sizes": sizes, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
