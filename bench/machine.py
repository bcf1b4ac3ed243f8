"""What the benchmarks say about the machine they ran on (shared by
bench_python.py and bench_files.py, which import it from their directory)."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), else platform's guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def machine(numpy_version: str) -> dict[str, object]:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": numpy_version}
