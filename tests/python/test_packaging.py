"""Packaging: the wheel is tagged manylinux (auditwheel agrees) with no
Python version in the tag and installs with no compiler; the sdist and the
`make dist` tarball build without autotools; `pip install .` works from a
fresh clone, from a tree configured in place and from one built elsewhere;
after `make install`, plain cffi and C programs use the library through the
installed headers and pkg-config, and the wheel's own headers build C
programs against its libdlpx.so."""

import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "packaging"))
import srctree  # noqa: E402

pytestmark = pytest.mark.slow


def _can_build():
    """The build tools of the main environment (requirements-dev.txt): the
    wheel is built once there and installed into every other Python."""
    try:
        import setuptools
        import wheel  # noqa: F401
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77


needs_build_tools = pytest.mark.skipif(not _can_build(),
                                       reason="setuptools >= 77 and wheel are not installed here")

VERSION = re.search(r"AC_INIT\(\[dlpx\],\s*\[([\d.]+)\]",
                    open(os.path.join(ROOT, "configure.ac")).read()).group(1)
AUTOTOOLS = ("autoconf", "autoheader", "autom4te", "automake", "aclocal", "autoreconf",
             "libtoolize", "m4", "autoscan", "autoupdate", "ifnames")


def run(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        return subprocess.run(cmd, **kw)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"{cmd} failed:\n{exc.stdout}\n{exc.stderr}") from None


def clean_env(**extra):
    """The environment without anything pointing at this checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DLPX_LIBRARY", "PYTHONPATH", "LD_LIBRARY_PATH", "DLPX_BUILD_DIR")}
    env.update(extra)
    return env


def without_autotools(tmp_path):
    """A PATH with everything of the current one but the autotools."""
    shim = tmp_path / "bin-no-autotools"
    shim.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = shim / name
            if name in AUTOTOOLS or target.exists() or name.startswith(AUTOTOOLS):
                continue
            src = os.path.join(d, name)
            if os.path.isfile(src) and os.access(src, os.X_OK):
                target.symlink_to(src)
    return str(shim)


def build_wheel(src, out, env=None):
    """A wheel of the source tree or sdist |src|, built with this Python's
    setuptools (no isolation, no downloads)."""
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)], env=env or clean_env(), cwd=str(out))
    found = glob.glob(str(out / "dlpx_cffi-*.whl"))
    assert len(found) == 1, found
    return found[0]


def smoke(py, tmp_path, env=None):
    """Imports the installed dlpx with |py| from outside the tree."""
    code = textwrap.dedent("""
        import os, dlpx
        here = os.path.dirname(dlpx.__file__)
        assert os.path.realpath(dlpx.library_path).startswith(os.path.realpath(here))
        t = dlpx.zeros((3, 4), "float32")
        v = t[1:, ::-1].T
        u = dlpx.from_dlpack(v.__dlpack__(max_version=(1, 0)))
        assert u.shape == (4, 2) and u.data_ptr == v.data_ptr
        print("ok", dlpx.__version__)
    """)
    r = run([py, "-c", code], env=env or clean_env(), cwd=str(tmp_path))
    assert r.stdout.split() == ["ok", VERSION], r.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if not _can_build():
        pytest.skip("setuptools >= 77 and wheel are not installed here")
    return build_wheel(ROOT, tmp_path_factory.mktemp("wheel"))


# ---- the wheel ---------------------------------------------------------------------------


def test_wheel_is_manylinux_without_a_python_tag(wheel):
    name = os.path.basename(wheel)
    assert re.fullmatch(rf"dlpx_cffi-{VERSION}-py3-none-manylinux_2_\d+_x86_64"
                        r"(\.manylinux2014_x86_64)?\.whl", name), name
    z = zipfile.ZipFile(wheel)
    names = z.namelist()
    soname = [n for n in names if re.fullmatch(r"dlpx/libdlpx\.so\.\d+", n)]
    assert len(soname) == 1, names
    for need in ["dlpx/py.typed", "dlpx/_build.py", "dlpx/decl/python.h",
                 "dlpx/include/dlpx/dlpx.h", "dlpx/include/dlpx/version.h",
                 f"dlpx_cffi-{VERSION}.dist-info/licenses/LICENSE"]:
        assert need in names, need
    assert not any(n.endswith((".pyd", ".cpython-311-x86_64-linux-gnu.so", "_cdef.h"))
                   for n in names)
    wheel_file = z.read(f"dlpx_cffi-{VERSION}.dist-info/WHEEL").decode()
    assert "Root-Is-Purelib: false" in wheel_file
    tags = re.findall(r"^Tag: (\S+)", wheel_file, flags=re.M)
    assert tags and all(t.startswith("py3-none-manylinux") for t in tags)


def test_auditwheel_agrees_with_the_tag(wheel):
    pytest.importorskip("auditwheel")
    r = run([sys.executable, "-m", "auditwheel", "show", wheel])
    policy = re.search(r'consistent with the following platform tag:\s*"([^"]+)"', r.stdout)
    assert policy, r.stdout
    assert f"-{policy.group(1)}" in os.path.basename(wheel), (policy.group(1), wheel)


def test_wheel_installs_and_runs_without_a_compiler(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], env=clean_env())
    empty = tmp_path / "empty-bin"  # no cc, gcc, make or autotools on PATH
    empty.mkdir()
    env = clean_env(PATH=str(empty), CC="/nonexistent/cc")
    py = str(venv / "bin" / "python")
    run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel], env=env,
        cwd=str(tmp_path))
    cffi_dir = os.path.dirname(os.path.dirname(__import__("cffi").__file__))
    # cffi and pycparser from this environment (a wheel install needs no build)
    env["PYTHONPATH"] = cffi_dir
    smoke(py, tmp_path, env)


def test_library_search_errors(tmp_path):
    env = dict(os.environ, DLPX_LIBRARY=str(tmp_path / "missing.so"))
    r = run([sys.executable, "-c", "import dlpx"], env=env, check=False, cwd=str(tmp_path))
    assert r.returncode != 0
    assert "$DLPX_LIBRARY" in r.stderr and "missing.so" in r.stderr
    assert "set DLPX_LIBRARY" in r.stderr


def test_wheel_headers_build_a_c_program_against_its_library(wheel, tmp_path):
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    z = zipfile.ZipFile(wheel)
    z.extractall(tmp_path / "w")
    pkg = tmp_path / "w" / "dlpx"
    src = tmp_path / "p.c"
    src.write_text('#include <dlpx/dlpx.h>\n#include <stdio.h>\n'
                   'int main(void) { printf("%s %d\\n", dlpx_version_string(), '
                   'DLPX_VERSION_NUMBER == dlpx_version_number()); return 0; }\n')
    (so,) = glob.glob(str(pkg / "libdlpx.so.*"))
    run(["cc", "-std=c11", "-I", str(pkg / "include"), str(src), so, "-o", str(tmp_path / "p")])
    r = run([str(tmp_path / "p")], env=clean_env(LD_LIBRARY_PATH=str(pkg)))
    assert r.stdout.split() == [VERSION, "1"]


# ---- sdist and make dist ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    pytest.importorskip("build")
    if not _can_build():
        pytest.skip("setuptools >= 77 and wheel are not installed here")
    out = tmp_path_factory.mktemp("sdist")
    run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(out), ROOT],
        env=clean_env())
    found = glob.glob(str(out / "dlpx_cffi-*.tar.gz"))
    assert len(found) == 1, found
    return found[0]


def _names(tarball):
    with tarfile.open(tarball) as tf:
        return {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}


def test_sdist_ships_generated_configure_and_no_build_output(sdist):
    names = _names(sdist)
    for need in ["configure", "Makefile.in", "aclocal.m4", "config.h.in", "build-aux/ltmain.sh",
                 "build-aux/tap-driver.sh", "include/dlpx/version.h.in", "py/dlpx/decl/dlpack.h",
                 "LICENSE", "PKG-INFO", "packaging/wheeltag.py"]:
        assert need in names, need
    for never in ["config.status", "py/dlpx/_build.py", "include/dlpx/version.h", "Makefile"]:
        assert never not in names, never


@pytest.fixture(scope="module")
def dist_tarball(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("makedist")
    src = srctree.copy_tree(str(tmp / "src"))
    if not os.path.exists(os.path.join(src, "configure")):
        run(["autoreconf", "-fi"], cwd=src)
    bdir = tmp / "build"
    bdir.mkdir()
    run([os.path.join(src, "configure"), "-q"], cwd=str(bdir))
    run(["make", "-s", "dist-gzip"], cwd=str(bdir))
    found = glob.glob(str(bdir / "dlpx-*.tar.gz"))
    assert len(found) == 1, found
    return found[0]


def test_sdist_ships_everything_make_dist_ships(sdist, dist_tarball):
    missing = _names(dist_tarball) - _names(sdist)
    assert not missing, sorted(missing)


def test_make_dist_ships_every_tracked_file(dist_tarball):
    if not os.path.isdir(os.path.join(ROOT, ".git")) or not shutil.which("git"):
        pytest.skip("not a git checkout")
    tracked = set(run(["git", "ls-files"], cwd=ROOT).stdout.split())
    ignored = {".gitignore"}
    missing = tracked - ignored - _names(dist_tarball)
    assert not missing, sorted(missing)


@pytest.mark.parametrize("kind", ["sdist", "make dist"])
def test_tarballs_build_with_pip_and_no_autotools(kind, sdist, dist_tarball, tmp_path):
    tarball = sdist if kind == "sdist" else dist_tarball
    with tarfile.open(tarball) as tf:
        tf.extractall(tmp_path / "x")
    (top,) = os.listdir(tmp_path / "x")
    out = tmp_path / "out"
    out.mkdir()
    env = clean_env(PATH=without_autotools(tmp_path))
    assert shutil.which("autoreconf", path=env["PATH"]) is None
    whl = build_wheel(tmp_path / "x" / top, out, env=env)
    assert os.path.basename(whl).startswith(f"dlpx_cffi-{VERSION}-py3-none-manylinux")


# ---- pip install . from the trees users have -------------------------------------------------


def _installed_smoke(whl, tmp_path):
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), whl],
        env=clean_env())
    smoke(sys.executable, tmp_path, clean_env(PYTHONPATH=str(target)))


@needs_build_tools
def test_pip_install_from_a_fresh_clone(tmp_path):
    if not os.path.isdir(os.path.join(ROOT, ".git")) or not shutil.which("git"):
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", ROOT, str(clone)])
    out = tmp_path / "out"
    out.mkdir()
    _installed_smoke(build_wheel(clone, out), tmp_path)


@needs_build_tools
def test_pip_install_and_c_suite_in_a_tree_configured_in_place(tmp_path):
    src = srctree.copy_tree(str(tmp_path / "tree"))
    if not os.path.exists(os.path.join(src, "configure")):
        run(["autoreconf", "-fi"], cwd=src)
    run(["./configure", "-q"], cwd=src)  # the README's "by hand" steps
    run(["make", "-s", "-j2", "src/libdlpx.la"], cwd=src)
    assert srctree.configured_in_place(src)
    out = tmp_path / "out"
    out.mkdir()
    _installed_smoke(build_wheel(src, out), tmp_path)
    # the test script's C part builds from a clean copy of such a tree
    r = run(["bash", "scripts/test_c.sh"], cwd=src,
            env=clean_env(DLPX_TEST_FAST="1", DLPX_TEST_NO_VALGRIND="1", VPY=sys.executable))
    assert "configured in place" in r.stdout and "# FAIL:  0" in r.stdout, r.stdout[-2000:]


@needs_build_tools
def test_pip_install_from_a_tree_built_elsewhere(tmp_path):
    src = srctree.copy_tree(str(tmp_path / "tree"))
    if not os.path.exists(os.path.join(src, "configure")):
        run(["autoreconf", "-fi"], cwd=src)
    elsewhere = tmp_path / "tree" / "mybuild"
    elsewhere.mkdir()
    run(["../configure", "-q"], cwd=str(elsewhere))
    run(["make", "-s", "-j2", "src/libdlpx.la"], cwd=str(elsewhere))
    out = tmp_path / "out"
    out.mkdir()
    _installed_smoke(build_wheel(src, out), tmp_path)


# ---- make install ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    tmp = tmp_path_factory.mktemp("install")
    src = srctree.copy_tree(str(tmp / "src"))
    if not os.path.exists(os.path.join(src, "configure")):
        run(["autoreconf", "-fi"], cwd=src)
    bdir = tmp / "build"
    bdir.mkdir()
    run([os.path.join(src, "configure"), "-q"], cwd=str(bdir))
    prefix = str(tmp / "prefix")
    run(["make", "-s", "-j2", "install", f"prefix={prefix}"], cwd=str(bdir))
    return prefix


def test_make_install_installs_every_header(installed):
    inc = os.path.join(installed, "include", "dlpx")
    want = {f for f in os.listdir(os.path.join(ROOT, "include", "dlpx")) if f.endswith(".h")}
    assert want | {"version.h"} <= set(os.listdir(inc))


def test_plain_cffi_after_make_install(installed, tmp_path):
    code = textwrap.dedent("""
        import cffi
        ffi = cffi.FFI()
        ffi.cdef('''
            typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
            typedef struct dlpx_tensor dlpx_tensor;
            int dlpx_dtype_parse(const char *name, DLDataType *out);
            int dlpx_tensor_zeros(DLDataType dtype, int32_t ndim, const int64_t *shape,
                                  dlpx_tensor **out);
            int64_t dlpx_tensor_numel(const dlpx_tensor *tensor);
            int dlpx_tensor_transpose(const dlpx_tensor *tensor, dlpx_tensor **out);
            const int64_t *dlpx_tensor_strides(const dlpx_tensor *tensor);
            void dlpx_tensor_free(dlpx_tensor *tensor);
            const char *dlpx_version_string(void);
        ''')
        lib = ffi.dlopen("libdlpx.so")
        dt = ffi.new("DLDataType *")
        assert lib.dlpx_dtype_parse(b"float64", dt) == 0
        out = ffi.new("dlpx_tensor **")
        assert lib.dlpx_tensor_zeros(dt[0], 2, ffi.new("int64_t[]", [3, 5]), out) == 0
        t = ffi.gc(out[0], lib.dlpx_tensor_free)
        assert lib.dlpx_tensor_transpose(t, out) == 0
        tt = ffi.gc(out[0], lib.dlpx_tensor_free)
        print(lib.dlpx_tensor_numel(t), list(lib.dlpx_tensor_strides(tt)[0:2]),
              ffi.string(lib.dlpx_version_string()).decode())
    """)
    env = clean_env(LD_LIBRARY_PATH=os.path.join(installed, "lib"))
    r = run([sys.executable, "-c", code], env=env, cwd=str(tmp_path))
    assert r.stdout.split() == ["15", "[1,", "5]", VERSION]


def test_c_program_with_pkg_config(installed, tmp_path):
    if not shutil.which("pkg-config") or not shutil.which("cc"):
        pytest.skip("pkg-config or cc missing")
    src = tmp_path / "prog.c"
    src.write_text(textwrap.dedent("""
        #include <dlpx/dlpx.h>
        #include <stdio.h>
        int main(void) {
          DLDataType f32;
          dlpx_tensor *t = NULL;
          int64_t shape[2] = {2, 3};
          if (dlpx_dtype_parse("float32", &f32) || dlpx_tensor_zeros(f32, 2, shape, &t)) return 1;
          DLManagedTensorVersioned *m = NULL;
          if (dlpx_tensor_export(t, 0, &m)) return 2;
          printf("%u.%u %lld %s\\n", m->version.major, m->version.minor,
                 (long long)dlpx_tensor_numel(t), DLPX_VERSION_STRING);
          m->deleter(m);
          dlpx_tensor_free(t);
          return 0;
        }
    """))
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(installed, "lib", "pkgconfig"))
    # installed with `make install prefix=...`: point dlpx.pc's ${prefix} there
    flags = run(["pkg-config", f"--define-variable=prefix={installed}", "--cflags", "--libs",
                 "dlpx"], env=env).stdout.split()
    assert f"-I{installed}/include" in flags
    run(["cc", "-std=c11", str(src), "-o", str(tmp_path / "prog")] + flags)
    env["LD_LIBRARY_PATH"] = os.path.join(installed, "lib")
    assert run([str(tmp_path / "prog")], env=env).stdout.split() == ["1.3", "6", VERSION]
