"""The cffi declarations (py/dlpx/_cdef.h) cannot drift from the C headers:
the same function prototypes, and the same constant values and struct
layouts as a C compiler computes them from include/dlpx/dlpx.h."""

import os
import re
import shutil
import subprocess

import pytest

import dlpx
from dlpx._lib import ffi, lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = os.path.join(ROOT, "include", "dlpx", "dlpx.h")
CDEF = os.path.join(os.path.dirname(dlpx.__file__), "_cdef.h")


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _normalize(proto):
    p = re.sub(r"\s+", " ", proto).strip()
    p = re.sub(r"\s*([*(),])\s*", r"\1", p)
    return p.rstrip(";")


def _without_preprocessor(text):
    text = text.replace("\\\n", " ")  # continued lines
    return re.sub(r"^\s*#.*$", " ", text, flags=re.M)


def header_prototypes():
    text = _without_preprocessor(_strip_comments(open(HEADER).read()))
    return {_normalize(m) for m in re.findall(r"DLPX_API\s+([^;]+;)", text)}


def cdef_prototypes():
    text = _strip_comments(open(CDEF).read())
    text = re.sub(r"^#.*$", " ", text, flags=re.M)          # #defines
    text = re.sub(r"typedef[^;{]*\{[^}]*\}[^;]*;", " ", text)  # struct and enum typedefs
    protos = set()
    for stmt in text.split(";"):
        stmt = stmt.strip()
        if stmt and not stmt.startswith("typedef") and re.search(r"\bdlpx_\w+\s*\(", stmt):
            protos.add(_normalize(stmt))
    return protos


def test_same_functions():
    header, cdef = header_prototypes(), cdef_prototypes()
    assert len(header) > 60
    assert header - cdef == set(), "declared in dlpx.h but not in _cdef.h"
    assert cdef - header == set(), "declared in _cdef.h but not in dlpx.h"


def test_every_function_resolves_in_the_library():
    for proto in cdef_prototypes():
        name = re.search(r"\b(dlpx_\w+)\(", proto).group(1)
        assert getattr(lib, name) is not None


def _cdef_defines():
    text = _strip_comments(open(CDEF).read())
    return re.findall(r"#define\s+(\w+)\s+(-?\d+)", text)


def _cdef_enum_names():
    text = _strip_comments(open(CDEF).read())
    names = []
    for body in re.findall(r"typedef\s+enum\s*\{([^}]*)\}", text):
        names += re.findall(r"(\w+)\s*=", body)
    return names


STRUCTS = {
    "DLPackVersion": ["major", "minor"],
    "DLDevice": ["device_type", "device_id"],
    "DLDataType": ["code", "bits", "lanes"],
    "DLTensor": ["data", "device", "ndim", "dtype", "shape", "strides", "byte_offset"],
    "DLManagedTensor": ["dl_tensor", "manager_ctx", "deleter"],
    "DLManagedTensorVersioned": ["version", "manager_ctx", "deleter", "flags", "dl_tensor"],
    "DLPackExchangeAPIHeader": ["version", "prev_api"],
    "DLPackExchangeAPI": ["header", "managed_tensor_allocator",
                          "managed_tensor_from_py_object_no_sync",
                          "managed_tensor_to_py_object_no_sync",
                          "dltensor_from_py_object_no_sync", "current_work_stream"],
    "dlpx_index": ["kind", "start", "stop", "step"],
    "dlpx_stats": ["storages_live", "tensors_live", "exports_live", "foreign_deleters_run",
                   "borrowed_releases_run", "python_refs_leaked"],
}


def test_pyapi_fields_in_the_same_order():
    fields = [f for f, _ in ffi.typeof("dlpx_pyapi").fields]
    text = _strip_comments(open(HEADER).read())
    end = text.index("} dlpx_pyapi;")
    body = text[text.rindex("typedef struct {", 0, end):end]
    names = []
    for stmt in body.replace("typedef struct {", "").split(";"):
        stmt = stmt.strip()
        if stmt:
            m = re.search(r"\(\*(\w+)\)", stmt)  # the first (*name) is the field
            names.append(m.group(1) if m else re.findall(r"\w+", stmt)[-1])
    assert fields == names


@pytest.fixture(scope="module")
def compiled_facts(tmp_path_factory):
    """What a C compiler says about dlpx.h: constant values, sizes, offsets."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <dlpx/dlpx.h>',
             "int main(void) {"]
    for name, _ in _cdef_defines():
        lines.append(f'  printf("{name} %lld\\n", (long long)({name}));')
    for name in _cdef_enum_names():
        lines.append(f'  printf("{name} %lld\\n", (long long)({name}));')
    for struct, fields in STRUCTS.items():
        lines.append(f'  printf("sizeof {struct} %zu\\n", sizeof({struct}));')
        for f in fields:
            lines.append(f'  printf("offsetof {struct}.{f} %zu\\n", offsetof({struct}, {f}));')
    lines.append('  printf("sizeof dlpx_pyapi %zu\\n", sizeof(dlpx_pyapi));')
    lines.append("  return 0;\n}")
    d = tmp_path_factory.mktemp("cdef")
    src, exe = d / "facts.c", d / "facts"
    src.write_text("\n".join(lines))
    subprocess.run([cc, "-std=c11", "-I", os.path.join(ROOT, "include"), str(src), "-o", str(exe)],
                   check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return dict(line.rsplit(" ", 1) for line in out.splitlines())


def test_defines_equal_the_header(compiled_facts):
    for name, value in _cdef_defines():
        assert int(compiled_facts[name]) == int(value), name
        assert getattr(lib, name) == int(value)


def test_enum_values_equal_the_header(compiled_facts):
    names = _cdef_enum_names()
    assert len(names) > 50
    for name in names:
        assert int(compiled_facts[name]) == getattr(lib, name), name


def test_struct_layouts_equal_the_header(compiled_facts):
    for struct, fields in STRUCTS.items():
        assert int(compiled_facts[f"sizeof {struct}"]) == ffi.sizeof(struct), struct
        for f in fields:
            assert int(compiled_facts[f"offsetof {struct}.{f}"]) == ffi.offsetof(struct, f), \
                f"{struct}.{f}"
    assert int(compiled_facts["sizeof dlpx_pyapi"]) == ffi.sizeof("dlpx_pyapi")


def test_versions_agree():
    """One version everywhere: configure.ac, dlpx.h, the .so, the package."""
    ac = open(os.path.join(ROOT, "configure.ac")).read()
    ac_version = re.search(r"AC_INIT\(\[dlpx\],\s*\[([\d.]+)\]", ac).group(1)
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    py_version = re.search(r'^version = "([\d.]+)"', pyproject, flags=re.M).group(1)
    so = ffi.string(lib.dlpx_version_string()).decode()
    assert ac_version == py_version == so == dlpx.__version__
    assert ".".join(map(str, dlpx.LIBRARY_VERSION)) == so
