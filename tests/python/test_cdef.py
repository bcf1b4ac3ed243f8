"""The cffi declarations (py/dlpx/decl/*.h) cannot drift from the C
headers: each decl file declares the same function prototypes as its header
in include/dlpx/, with the same constant values and struct layouts as a C
compiler computes them; and the lists Python reads from C at import (errors,
dtypes, devices) are the headers' own."""

import os
import re
import shutil
import subprocess

import pytest

import dlpx
from dlpx._lib import DECLARATIONS, ffi, lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADERS = os.path.join(ROOT, "include", "dlpx")
DECL = os.path.join(os.path.dirname(dlpx.__file__), "decl")


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


def header_prototypes(name):
    text = _without_preprocessor(_strip_comments(open(os.path.join(HEADERS, name)).read()))
    return {_normalize(m) for m in re.findall(r"DLPX_API\s+([^;]+;)", text)}


def decl_prototypes(name):
    text = _strip_comments(open(os.path.join(DECL, name)).read())
    text = re.sub(r"^#.*$", " ", text, flags=re.M)          # #defines
    text = re.sub(r"typedef[^;{]*\{[^}]*\}[^;]*;", " ", text)  # struct and enum typedefs
    protos = set()
    for stmt in text.split(";"):
        stmt = stmt.strip()
        if stmt and not stmt.startswith("typedef") and re.search(r"\bdlpx_\w+\s*\(", stmt):
            protos.add(_normalize(stmt))
    return protos


def test_one_decl_file_per_public_header():
    headers = {f for f in os.listdir(HEADERS) if f.endswith(".h")}
    # umbrella and macro-only headers have no declarations of their own
    assert set(DECLARATIONS) == headers - {"dlpx.h", "common.h", "version.h"}
    assert sorted(os.listdir(DECL)) == sorted(DECLARATIONS + ("README",))


@pytest.mark.parametrize("name", DECLARATIONS)
def test_same_functions_per_header(name):
    header, decl = header_prototypes(name), decl_prototypes(name)
    assert header - decl == set(), f"declared in include/dlpx/{name} but not in decl/{name}"
    assert decl - header == set(), f"declared in decl/{name} but not in include/dlpx/{name}"


def test_every_function_resolves_in_the_library():
    protos = set().union(*(decl_prototypes(n) for n in DECLARATIONS))
    assert len(protos) > 80
    for proto in protos:
        name = re.search(r"\b(dlpx_\w+)\(", proto).group(1)
        assert getattr(lib, name) is not None


def _decl_text():
    return "\n".join(_strip_comments(open(os.path.join(DECL, n)).read()) for n in DECLARATIONS)


def _decl_defines():
    return re.findall(r"#define\s+(\w+)\s+(-?\d+)", _decl_text())


def _decl_enum_names():
    names = []
    for body in re.findall(r"typedef\s+enum\s*\{([^}]*)\}", _decl_text()):
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
    "dlpx_error_info": ["code", "name", "message", "exception", "dlpack_exception"],
    "dlpx_dtype_info": ["dtype", "name"],
    "dlpx_device_info": ["device_type", "name", "flags"],
    "dlpx_pyapi": [f for f, _ in ffi.typeof("dlpx_pyapi").fields],
}


def test_pyapi_fields_in_the_same_order():
    fields = [f for f, _ in ffi.typeof("dlpx_pyapi").fields]
    text = _strip_comments(open(os.path.join(HEADERS, "python.h")).read())
    end = text.index("} dlpx_pyapi;")
    body = text[text.rindex("typedef struct {", 0, end):end]
    names = []
    for stmt in body.replace("typedef struct {", "").split(";"):
        stmt = stmt.strip()
        if stmt:
            m = re.search(r"\(\*(\w+)\)", stmt)  # the first (*name) is the field
            names.append(m.group(1) if m else re.findall(r"\w+", stmt.split("[")[0])[-1])
    assert fields == names


def _include_dirs():
    """The installed headers (dlpx.include_dir(), version.h included), or the
    checkout's with a build tree's generated version.h."""
    inc = dlpx.include_dir()
    if os.path.exists(os.path.join(inc, "dlpx", "version.h")):
        return [inc]
    build = os.environ.get("DLPX_BUILD_DIR")
    if build and os.path.exists(os.path.join(build, "include", "dlpx", "version.h")):
        return [os.path.join(ROOT, "include"), os.path.join(build, "include")]
    pytest.skip("no generated dlpx/version.h: install the package or set DLPX_BUILD_DIR")


@pytest.fixture(scope="module")
def compiled_facts(tmp_path_factory):
    """What a C compiler says about the headers: constant values, sizes,
    offsets, and the error list."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <dlpx/dlpx.h>',
             "#define ERR(name, value, message, exc, dlexc) "
             'printf("error DLPX_" #name " %lld %s %s %s\\n", (long long)DLPX_##name, '
             "message, #exc, #dlexc);",
             "int main(void) {"]
    for name, _ in _decl_defines():
        lines.append(f'  printf("{name} %lld\\n", (long long)({name}));')
    for name in _decl_enum_names():
        lines.append(f'  printf("{name} %lld\\n", (long long)({name}));')
    for struct, fields in STRUCTS.items():
        lines.append(f'  printf("sizeof {struct} %zu\\n", sizeof({struct}));')
        for f in fields:
            lines.append(f'  printf("offsetof {struct}.{f} %zu\\n", offsetof({struct}, {f}));')
    lines.append("  DLPX_ERROR_MAP(ERR)")
    lines.append('  printf("version %s\\n", DLPX_VERSION_STRING);')
    lines.append("  return 0;\n}")
    d = tmp_path_factory.mktemp("cdef")
    src, exe = d / "facts.c", d / "facts"
    src.write_text("\n".join(lines))
    incs = [a for i in _include_dirs() for a in ("-I", i)]
    subprocess.run([cc, "-std=c11", *incs, str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    facts, errors = {}, []
    for line in out.splitlines():
        if line.startswith("error "):
            errors.append(line.split(" ", 1)[1])
        else:
            k, v = line.rsplit(" ", 1)
            facts[k] = v
    facts["errors"] = errors
    return facts


def test_defines_equal_the_header(compiled_facts):
    for name, value in _decl_defines():
        assert int(compiled_facts[name]) == int(value), name
        assert getattr(lib, name) == int(value)


def test_enum_values_equal_the_header(compiled_facts):
    names = _decl_enum_names()
    assert len(names) > 50
    for name in names:
        assert int(compiled_facts[name]) == getattr(lib, name), name


def test_struct_layouts_equal_the_header(compiled_facts):
    for struct, fields in STRUCTS.items():
        assert int(compiled_facts[f"sizeof {struct}"]) == ffi.sizeof(struct), struct
        for f in fields:
            assert int(compiled_facts[f"offsetof {struct}.{f}"]) == ffi.offsetof(struct, f), \
                f"{struct}.{f}"


def test_error_list_is_read_from_c(compiled_facts):
    """dlpx.ErrorCode and the exception mapping come from DLPX_ERROR_MAP."""
    from dlpx import _errors

    compiled = compiled_facts["errors"]
    assert len(compiled) == len(dlpx.ErrorCode) >= 14
    for line, code in zip(compiled, dlpx.ErrorCode):
        name, value, rest = line.split(" ", 2)
        assert name == "DLPX_" + code.name and int(value) == code.value
        exc, dlexc = rest.rsplit(" ", 2)[-2:]
        assert _errors._GENERAL[code].__name__ == exc
        assert _errors._DLPACK[code].__name__ == dlexc


def test_versions_agree(compiled_facts):
    """One version everywhere: configure.ac, the headers, the .so, the package."""
    ac = open(os.path.join(ROOT, "configure.ac")).read()
    ac_version = re.search(r"AC_INIT\(\[dlpx\],\s*\[([\d.]+)\]", ac).group(1)
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert 'dynamic = ["version"]' in pyproject  # no second copy of it there
    so = ffi.string(lib.dlpx_version_string()).decode()
    assert ac_version == so == dlpx.__version__ == compiled_facts["version"]
    assert ".".join(map(str, dlpx.LIBRARY_VERSION)) == so


def test_no_version_literal_in_the_python_package():
    pkg = os.path.dirname(dlpx.__file__)
    for name in os.listdir(pkg):
        if name.endswith(".py") and name != "_build.py":
            assert dlpx.__version__ not in open(os.path.join(pkg, name)).read(), name
