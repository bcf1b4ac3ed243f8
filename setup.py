"""Builds libdlpx.so with the project's autotools and ships it inside the
dlpx package, with the C headers (dlpx.include_dir()).  The wheel is tagged
py3-none-<platform>: the library does not depend on the Python version, and
the platform tag is the manylinux one its glibc symbol versions allow
(packaging/wheeltag.py).

Where the sources come from:
  - a git checkout: autoreconf generates configure first (needs autotools);
  - an sdist or a `make dist` tarball: configure is there (a C compiler and
    make suffice);
  - a tree configured in place (./configure run at the top): a clean copy of
    it is built instead, as automake cannot configure elsewhere then.
"""

import os
import re
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70
    from wheel.bdist_wheel import bdist_wheel

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "packaging"))
import srctree  # noqa: E402
import vendor  # noqa: E402
import wheeltag  # noqa: E402


def version():
    """The version, from its one place: AC_INIT in configure.ac."""
    with open(os.path.join(ROOT, "configure.ac"), encoding="utf-8") as f:
        m = re.search(r"^AC_INIT\(\[dlpx\],\s*\[([0-9.]+)\]", f.read(), flags=re.M)
    if not m:
        raise RuntimeError("configure.ac has no AC_INIT([dlpx], [version])")
    return m.group(1)


def _run(cmd, cwd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def _autoreconf(src):
    if not os.path.exists(os.path.join(src, "configure")):
        _run(["autoreconf", "-fi"], src)


def build_libdlpx(build_temp):
    """Configures and builds libdlpx; returns (the .so, its build dir)."""
    build_temp = os.path.abspath(build_temp)
    src = ROOT
    if srctree.configured_in_place(ROOT):
        src = srctree.copy_tree(os.path.join(build_temp, "src"))
    _autoreconf(src)
    bdir = os.path.join(build_temp, "libdlpx")
    marker = os.path.join(bdir, ".dlpx-source")
    if os.path.exists(bdir) and (not os.path.exists(marker) or open(marker).read() != src):
        shutil.rmtree(bdir)  # configured for other sources
    os.makedirs(bdir, exist_ok=True)
    with open(marker, "w") as f:
        f.write(src)
    if not os.path.exists(os.path.join(bdir, "Makefile")):
        _run([os.path.join(src, "configure"), "-q", "--disable-static", "CFLAGS=-O2"], bdir)
    _run(["make", "-j%d" % (os.cpu_count() or 2), "src/libdlpx.la", "include/dlpx/version.h"],
         bdir)
    so = os.path.realpath(os.path.join(bdir, "src", ".libs", "libdlpx.so"))
    if not os.path.isfile(so):
        raise RuntimeError(f"libdlpx build produced no {so}")
    return so, bdir, src


def _soname(bdir):
    """The soname libtool gave the library (dlname in libdlpx.la)."""
    with open(os.path.join(bdir, "src", "libdlpx.la"), encoding="utf-8") as f:
        return re.search(r"^dlname='([^']+)'", f.read(), flags=re.M).group(1)


class BuildPy(build_py):
    def run(self):
        # setuptools reuses build/lib: files a previous version shipped must
        # not reach this wheel
        shutil.rmtree(os.path.join(self.build_lib, "dlpx"), ignore_errors=True)
        super().run()
        if os.environ.get("DLPX_SKIP_LIB_BUILD"):
            return
        so, bdir, src = build_libdlpx(os.path.join(ROOT, "build", "setuptools"))
        pkg = os.path.join(self.build_lib, "dlpx")
        os.makedirs(pkg, exist_ok=True)
        # under its soname, so C programs linked against the shipped copy
        # (with dlpx.include_dir()) find it at run time
        soname = _soname(bdir)
        shipped = os.path.join(pkg, soname)
        shutil.copyfile(so, shipped)
        vendor.vendor(shipped)  # jansson, as auditwheel would
        with open(os.path.join(pkg, "_build.py"), "w", encoding="utf-8") as f:
            f.write('"""Written by setup.py when the package was built; do not edit."""\n\n'
                    f'__version__ = "{version()}"\nSONAME = "{soname}"\n')
        headers = os.path.join(pkg, "include", "dlpx")
        if os.path.exists(headers):
            shutil.rmtree(headers)
        shutil.copytree(os.path.join(src, "include", "dlpx"), headers,
                        ignore=shutil.ignore_patterns("*.in"))
        shutil.copyfile(os.path.join(bdir, "include", "dlpx", "version.h"),
                        os.path.join(headers, "version.h"))
        self.built_library = so


class BdistWheel(bdist_wheel):
    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False  # ships a native library

    def get_tag(self):
        bdir = os.path.join(ROOT, "build", "setuptools", "libdlpx")
        shipped = os.path.join(self.bdist_dir or "", "dlpx", _soname(bdir))
        build_lib = self.get_finalized_command("build_py").build_lib
        for so in (shipped, os.path.join(build_lib, "dlpx", _soname(bdir))):
            if os.path.isfile(so):
                return "py3", "none", wheeltag.platform_tag(so)
        so = os.path.join(bdir, "src", ".libs", "libdlpx.so")
        return "py3", "none", wheeltag.platform_tag(os.path.realpath(so))


class Sdist(sdist):
    """An sdist with the generated configure (and everything `make dist`
    ships), so installing it needs a C compiler but not autotools."""

    def run(self):
        _autoreconf(ROOT)
        super().run()


class BinaryDistribution(Distribution):
    """A distribution that ships a native library (not an extension)."""

    def has_ext_modules(self):
        return True


setup(version=version(), distclass=BinaryDistribution,
      cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel, "sdist": Sdist})
