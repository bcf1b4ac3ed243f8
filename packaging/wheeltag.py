"""The platform tag a wheel that ships libdlpx.so (and the libraries
packaging/vendor.py placed beside it) may carry.

manylinux tags promise that a shared object needs nothing but an old enough
glibc (PEP 600): this module reads the ELF file itself (no tool needed) for
the libraries it links (DT_NEEDED) and the glibc symbol versions it uses
(.gnu.version_r), and gives ``manylinux_2_<minor>_<arch>`` for the oldest
manylinux policy (as auditwheel lists them, manylinux2014 at the oldest)
whose glibc has every GLIBC_2.<minor> it needs, with the legacy alias pip <
20.3 knows.  A
library that links anything outside the manylinux set gets the plain
``linux_<arch>`` tag instead.  ``auditwheel show`` checks the result in the
tests.
"""

from __future__ import annotations

import os
import re
import struct
import sys

# Libraries every manylinux system has (PEP 600's policy for glibc).
ALLOWED = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
           "libgcc_s.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
           "libutil.so.1", "libresolv.so.2", "libcrypt.so.1", "libnsl.so.1"}
_MACHINES = {62: "x86_64", 183: "aarch64"}
_SHT_DYNAMIC, _SHT_GNU_VERNEED = 6, 0x6FFFFFFE
# glibc minor versions of auditwheel's manylinux policies, from manylinux2014 on.
POLICIES = (17, 24, 27, 28, 31, 34, 35, 36, 37, 38, 39, 40, 41)
_DT_NEEDED = 1


def _read_elf(path: str) -> tuple[str, list[str], list[str]]:
    """(arch, DT_NEEDED libraries, version names needed) of a 64-bit
    little-endian ELF shared object."""
    data = open(path, "rb").read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path} is not a 64-bit little-endian ELF file")
    (machine,) = struct.unpack_from("<H", data, 18)
    shoff, = struct.unpack_from("<Q", data, 40)
    shentsize, shnum = struct.unpack_from("<HH", data, 58)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]

    def string(section_index: int, offset: int) -> str:
        base = sections[section_index][4]
        end = data.index(b"\0", base + offset)
        return data[base + offset:end].decode()

    needed, versions = [], []
    for _name, kind, _f, _a, off, size, link, info, _al, entsize in sections:
        if kind == _SHT_DYNAMIC:
            for j in range(0, size, entsize or 16):
                tag, val = struct.unpack_from("<qQ", data, off + j)
                if tag == _DT_NEEDED:
                    needed.append(string(link, val))
        elif kind == _SHT_GNU_VERNEED:
            pos = off
            for _ in range(info):  # Elf64_Verneed entries
                _ver, cnt, _file, aux, nxt = struct.unpack_from("<HHIII", data, pos)
                apos = pos + aux
                for _ in range(cnt):  # Elf64_Vernaux entries
                    _hash, _flags, _other, name, anext = struct.unpack_from("<IHHII", data, apos)
                    versions.append(string(link, name))
                    apos += anext
                pos += nxt
    return _MACHINES.get(machine, f"machine{machine}"), needed, versions


def glibc_minor(versions: list[str]) -> int:
    """The newest GLIBC_2.<minor> among |versions| (5 if none)."""
    minors = [int(m.group(1)) for v in versions for m in [re.match(r"GLIBC_2\.(\d+)", v)] if m]
    return max(minors + [5])


def platform_tag(path: str) -> str:
    """The wheel platform tag (dot-joined when several) for the .so at |path|."""
    arch, needed, versions = _read_elf(path)
    for lib in needed:
        if lib in ALLOWED:
            continue
        # vendored next to it (packaging/vendor.py): its needs count too
        near = os.path.join(os.path.dirname(path), lib)
        if not os.path.isfile(near):
            return f"linux_{arch}"
        _a, sub, sub_versions = _read_elf(near)
        if any(s not in ALLOWED for s in sub):
            return f"linux_{arch}"
        versions = versions + sub_versions
    need = glibc_minor(versions)
    minor = next((p for p in POLICIES if p >= need), need)
    tags = [f"manylinux_2_{minor}_{arch}"]
    if minor <= 17 and arch in ("x86_64", "aarch64"):
        tags.append(f"manylinux2014_{arch}")
    return ".".join(tags)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(p, platform_tag(p), _read_elf(p)[1])
