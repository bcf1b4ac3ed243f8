"""The CUDA driver's test double (tests/fakecuda.c) for the Python suite:
built once per source version into a cache directory with the system C
compiler, and loaded by libdlpx through $DLPX_LIBCUDA (conftest.py sets it
unless DLPX_TEST_CUDA=real asks for the machine's driver).  Its control
functions (fakecuda.h) are reached through ctypes on the same file, which
the dynamic loader opens once: the same instance libdlpx uses."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(ROOT, "tests", "fakecuda.c")
DRIVER_H = os.path.join(ROOT, "src", "cuda")


def build() -> Optional[str]:
    """The path of the built double, or None when it cannot be built."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc or not os.path.exists(SOURCE):
        return None
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()
                                + open(os.path.join(DRIVER_H, "driver.h"), "rb").read()).hexdigest()
    out_dir = os.path.join(tempfile.gettempdir(), f"dlpx-fakecuda-{os.getuid()}")
    os.makedirs(out_dir, exist_ok=True)
    lib = os.path.join(out_dir, f"libfakecuda-{digest[:16]}.so")
    if not os.path.exists(lib):
        tmp = f"{lib}.{os.getpid()}.tmp"
        cmd = [cc, "-std=c11", "-D_GNU_SOURCE", "-O1", "-g", "-fPIC", "-shared",
               "-fvisibility=hidden", "-I", DRIVER_H, "-o", tmp, SOURCE, "-lpthread"]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
        os.replace(tmp, lib)
    return lib


class Control:
    """The double's control API (fakecuda.h)."""

    def __init__(self, path: str) -> None:
        self.lib = ctypes.CDLL(path)
        L = self.lib
        L.fakecuda_fail.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        L.fakecuda_fail_always.argtypes = [ctypes.c_char_p, ctypes.c_int]
        L.fakecuda_calls.argtypes = [ctypes.c_char_p]
        L.fakecuda_calls.restype = ctypes.c_long
        L.fakecuda_set_delay_us.argtypes = [ctypes.c_uint]
        L.fakecuda_live_bytes.argtypes = [ctypes.c_int]
        L.fakecuda_live_bytes.restype = ctypes.c_longlong
        L.fakecuda_live_allocations.restype = ctypes.c_long
        L.fakecuda_live_streams.restype = ctypes.c_long
        L.fakecuda_live_events.restype = ctypes.c_long
        L.fakecuda_is_device_pointer.argtypes = [ctypes.c_size_t]

    def fail(self, entry: str, after: int = 0, code: int = 999) -> None:
        self.lib.fakecuda_fail(entry.encode(), after, code)

    def fail_always(self, entry: str, code: int) -> None:
        self.lib.fakecuda_fail_always(entry.encode(), code)

    def calls(self, entry: str) -> int:
        return int(self.lib.fakecuda_calls(entry.encode()))

    def delay(self, us: int) -> None:
        self.lib.fakecuda_set_delay_us(us)

    def live_bytes(self, device: int = 0) -> int:
        return int(self.lib.fakecuda_live_bytes(device))

    def live_allocations(self) -> int:
        return int(self.lib.fakecuda_live_allocations())

    def live_streams(self) -> int:
        return int(self.lib.fakecuda_live_streams())

    def is_device_pointer(self, p: int) -> bool:
        return bool(self.lib.fakecuda_is_device_pointer(p))
