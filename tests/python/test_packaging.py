"""Packaging: the wheel is platform-tagged (no Python ABI), installs into a
fresh virtual environment and works from outside the source tree; after
`make install`, plain cffi (no dlpx Python code) and C programs use the
library through the installed header and pkg-config."""

import glob
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.slow


def run(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        return subprocess.run(cmd, **kw)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"{cmd} failed:\n{exc.stdout}\n{exc.stderr}") from None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ)
    env.pop("DLPX_LIBRARY", None)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), ROOT], env=env, cwd=str(out))
    found = glob.glob(str(out / "dlpx_cffi-*.whl"))
    assert len(found) == 1
    return found[0]


def test_wheel_is_tagged_for_the_platform_not_python(wheel):
    name = os.path.basename(wheel)
    assert name.startswith("dlpx_cffi-0.1.0-py3-none-linux_"), name
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    assert "dlpx/libdlpx.so" in names and "dlpx/_cdef.h" in names
    assert not any(n.endswith((".pyd", ".cpython-311-x86_64-linux-gnu.so")) for n in names)


def clean_env():
    """The environment without anything pointing at this checkout."""
    return {k: v for k, v in os.environ.items()
            if k not in ("DLPX_LIBRARY", "PYTHONPATH", "LD_LIBRARY_PATH")}


def test_wheel_in_a_fresh_venv_outside_the_tree(wheel, tmp_path):
    venv = tmp_path / "venv"
    env = clean_env()
    run([sys.executable, "-m", "venv", str(venv)], env=env)
    py = str(venv / "bin" / "python")
    run([py, "-m", "pip", "install", "-q", wheel], env=env, cwd=str(tmp_path))
    code = textwrap.dedent("""
        import os, sys, dlpx
        here = os.path.dirname(dlpx.__file__)
        assert os.path.realpath(dlpx.library_path).startswith(os.path.realpath(here)), \\
            dlpx.library_path
        assert "site-packages" in here, here
        t = dlpx.zeros((3, 4), "float32")
        v = t[1:, ::-1].T
        cap = v.__dlpack__(max_version=(1, 0))
        u = dlpx.from_dlpack(cap)
        assert u.shape == (4, 2) and u.data_ptr == v.data_ptr
        print("ok", dlpx.__version__, dlpx.library_path)
    """)
    r = run([py, "-c", code], env=env, cwd=str(tmp_path))
    assert r.stdout.startswith("ok 0.1.0"), r.stdout


def test_library_search_errors(tmp_path):
    env = dict(os.environ, DLPX_LIBRARY=str(tmp_path / "missing.so"))
    r = run([sys.executable, "-c", "import dlpx"], env=env, check=False, cwd=str(tmp_path))
    assert r.returncode != 0
    assert "$DLPX_LIBRARY" in r.stderr and "missing.so" in r.stderr
    assert "set DLPX_LIBRARY" in r.stderr


def _build_tree(tmp_path):
    """A configured libdlpx build tree: $DLPX_BUILD_DIR (the test script's),
    or a fresh one."""
    bdir = os.environ.get("DLPX_BUILD_DIR")
    if bdir and os.path.exists(os.path.join(bdir, "Makefile")):
        return bdir
    if not os.path.exists(os.path.join(ROOT, "configure")):
        run(["autoreconf", "-fi"], cwd=ROOT)
    bdir = str(tmp_path / "build")
    os.makedirs(bdir)
    run([os.path.join(ROOT, "configure"), "-q"], cwd=bdir)
    return bdir


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    tmp = tmp_path_factory.mktemp("install")
    bdir = _build_tree(tmp)
    prefix = str(tmp / "prefix")
    run(["make", "-s", "-j2", "install", f"prefix={prefix}"], cwd=bdir)
    return prefix


def test_plain_cffi_after_make_install(installed, tmp_path):
    assert os.path.exists(os.path.join(installed, "include", "dlpx", "dlpx.h"))
    assert os.path.exists(os.path.join(installed, "include", "dlpx", "dlpack.h"))
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
    env = clean_env()
    env["LD_LIBRARY_PATH"] = os.path.join(installed, "lib")
    r = run([sys.executable, "-c", code], env=env, cwd=str(tmp_path))
    assert r.stdout.split() == ["15", "[1,", "5]", "0.1.0"]


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
          printf("%u.%u %lld\\n", m->version.major, m->version.minor,
                 (long long)dlpx_tensor_numel(t));
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
    assert run([str(tmp_path / "prog")], env=env).stdout.strip() == "1.3 6"
