"""The source tree libdlpx is built from.

automake refuses to configure a build directory elsewhere when the source
tree itself was configured in place (``./configure && make`` there: "source
directory already configured").  The Python build and scripts/test.sh then
build from a clean copy: the files a source distribution has, copied with
their times (so make regenerates nothing), without the in-place outputs.

Usable as a module (setup.py) and as a command:
    python3 packaging/srctree.py [--if-configured] DEST
copies the tree this file lies in to DEST and prints DEST (with
--if-configured, only when the tree is configured in place; else it prints
the tree itself).
"""

from __future__ import annotations

import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What a source snapshot holds, by folder: None means every file.
_ROOT_FILES = {"configure", "LICENSE", "MANIFEST.in"}
_ROOT_SUFFIXES = (".ac", ".am", ".in", ".m4", ".md", ".py", ".toml", ".txt")
_TREE_SUFFIXES = {
    "build-aux": None,
    "m4": (".m4",),
    "include": (".h", ".in"),
    "src": (".c", ".h"),
    "tests": (".c", ".h", ".inc", ".sh", ".py"),
    "examples": (".c", ".py"),
    "bench": (".c", ".py"),
    "py": (".py", ".h", ".typed", "README"),
    "scripts": (".sh", ".py"),
    "packaging": (".py",),
    "fuzz": None,  # the target, its script and its corpus (files without suffixes)
    ".ci": None,
}
_GENERATED = {os.path.join("include", "dlpx", "version.h")}  # made by configure


def configured_in_place(root: str = ROOT) -> bool:
    return os.path.exists(os.path.join(root, "config.status"))


def snapshot_files(root: str = ROOT) -> list[str]:
    """The paths (relative to |root|) a clean copy holds."""
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isfile(path) and (name in _ROOT_FILES or name.endswith(_ROOT_SUFFIXES)):
            out.append(name)
    for top, suffixes in _TREE_SUFFIXES.items():
        base = os.path.join(root, top)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames
                                 if d not in (".libs", ".deps", "__pycache__", "build"))
            for f in sorted(filenames):
                rel = os.path.relpath(os.path.join(dirpath, f), root)
                if rel in _GENERATED:
                    continue
                if suffixes is None or f.endswith(suffixes):
                    out.append(rel)
    return out


def copy_tree(dest: str, root: str = ROOT) -> str:
    """A fresh clean copy of |root| at |dest| (replaced if it exists)."""
    if os.path.exists(dest):
        shutil.rmtree(dest)
    for rel in snapshot_files(root):
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, rel), target)
    return dest


def main(argv: list[str]) -> int:
    only_if = "--if-configured" in argv
    args = [a for a in argv if a != "--if-configured"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    if only_if and not configured_in_place():
        print(ROOT)
    else:
        print(copy_tree(os.path.abspath(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
