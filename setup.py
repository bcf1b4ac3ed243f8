"""Builds libdlpx.so with the project's autotools and ships it inside the
dlpx package.  The wheel is tagged py3-none-<platform>: the library does
not depend on the Python version, only on the platform."""

import os
import shutil
import subprocess
import sysconfig

from setuptools import setup
from setuptools.dist import Distribution
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70
    from wheel.bdist_wheel import bdist_wheel

ROOT = os.path.dirname(os.path.abspath(__file__))


def _run(cmd, cwd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def build_libdlpx(build_temp):
    """Runs autoreconf (in a checkout), configure and make; returns the .so."""
    if not os.path.exists(os.path.join(ROOT, "configure")):
        _run(["autoreconf", "-fi"], ROOT)
    bdir = os.path.join(os.path.abspath(build_temp), "libdlpx")
    os.makedirs(bdir, exist_ok=True)
    if not os.path.exists(os.path.join(bdir, "Makefile")):
        _run([os.path.join(ROOT, "configure"), "-q", "--disable-static", "CFLAGS=-O2"], bdir)
    _run(["make", "-j%d" % (os.cpu_count() or 2), "src/libdlpx.la"], bdir)
    so = os.path.realpath(os.path.join(bdir, "src", ".libs", "libdlpx.so"))
    if not os.path.isfile(so):
        raise RuntimeError(f"libdlpx build produced no {so}")
    return so


class BuildPy(build_py):
    def run(self):
        super().run()
        if os.environ.get("DLPX_SKIP_LIB_BUILD"):
            return
        so = build_libdlpx(os.path.join(ROOT, "build", "setuptools"))
        dest = os.path.join(self.build_lib, "dlpx", "libdlpx.so")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(so, dest)


class BdistWheel(bdist_wheel):
    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False  # ships a native library

    def get_tag(self):
        plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        return "py3", "none", plat


class BinaryDistribution(Distribution):
    """A distribution that ships a native library (not an extension)."""

    def has_ext_modules(self):
        return True


setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel})
