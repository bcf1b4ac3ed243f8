"""Objects over HTTP(S) and S3, beside the tensor-file functions that take
URLs (``dlpx.load_file``, ``dlpx.safe_open``, ``dlpx.load_into``,
``dlpx.save_file``):

    import dlpx
    sd = dlpx.load_file("s3://bucket/model.safetensors", framework="numpy",
                        storage_options={"concurrency": 16})
    dlpx.remote.copy("model.safetensors", "s3://bucket/model.safetensors")
    for key, size in dlpx.remote.list("s3://bucket/checkpoints/"):
        ...

The transfers are libdlpx's (libcurl, opened at run time): ranged GETs run
concurrently into their destination, uploads as S3 multipart uploads that
appear whole or not at all.  ``storage_options`` keys:

  token                  http(s): a bearer token
  region, endpoint_url   s3 (default: $AWS_REGION, $AWS_ENDPOINT_URL_S3 /
                         $AWS_ENDPOINT_URL, else AWS)
  path_style             s3: True/False (default: path-style with an
                         endpoint override, virtual-hosted otherwise)
  aws_access_key_id, aws_secret_access_key, aws_session_token, profile
                         s3 credentials (default: botocore's chain when it
                         is installed, else the environment and
                         ~/.aws/credentials; none: unsigned requests)
  part_size              bytes per request or uploaded part (8 MiB)
  concurrency            requests in flight (8)
  retries                retries of a failed request (5; with backoff)
  timeout                seconds without progress before a request fails (30)
  ca_file, verify        https: a CA bundle, and whether to verify (True)
  checksum               uploads: None or "crc32" (x-amz-checksum-crc32)

Errors: FileNotFoundError (404), PermissionError (401/403), TimeoutError,
OSError (other HTTP and network failures), ValueError (bad options,
malformed files, checksum mismatches)."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from ._errors import check
from ._files import path_arg
from ._lib import ffi, lib, types
from ._remote import KEYS, Options, is_url

__all__ = ["available", "copy", "stat", "list", "delete", "is_url", "STORAGE_OPTIONS"]

#: The keys storage_options accepts.
STORAGE_OPTIONS = tuple(sorted(KEYS))

_list = list


def available() -> bool:
    """Whether libcurl could be loaded (HTTP and S3 work)."""
    return bool(lib.dlpx_remote_available())


def _url(url: Any) -> str:
    u = path_arg(url)
    if not is_url(u):
        raise ValueError(f"{u!r} is not an http://, https:// or s3:// URL")
    return u


def stat(url: Any, *, storage_options: Optional[dict[str, Any]] = None) -> int:
    """The byte size of the object at |url| (a HEAD request)."""
    u = _url(url)
    opts = Options(u, storage_options)
    out = ffi.new(types.uint64_t_p)
    check(lib.dlpx_remote_stat(u.encode(), opts.c, out))
    return int(out[0])


def delete(url: Any, *, storage_options: Optional[dict[str, Any]] = None) -> None:
    """Deletes the object at |url| (no error when it is not there)."""
    u = _url(url)
    opts = Options(u, storage_options)
    check(lib.dlpx_remote_delete(u.encode(), opts.c))


def list(url: Any, *, storage_options: Optional[dict[str, Any]] = None) -> _list[tuple[str, int]]:
    """(key, size) of every object under the ``s3://bucket/prefix`` |url|."""
    u = _url(url)
    opts = Options(u, storage_options)
    out: _list[tuple[str, int]] = []
    errors: _list[BaseException] = []

    def each(_ctx: Any, key: Any, size: int) -> int:
        try:
            out.append((ffi.string(key).decode("utf-8", "surrogateescape"), int(size)))
            return 0
        except BaseException as e:  # never let an exception cross C
            errors.append(e)
            return -1

    cb = ffi.callback(types.list_fn, each)
    rc = lib.dlpx_remote_list(u.encode(), opts.c, cb, ffi.NULL)
    if errors:
        raise errors[0]
    check(rc)
    return out


def copy(src: Any, dst: Any, *, storage_options: Optional[dict[str, Any]] = None,
         progress: Optional[Callable[[int, int], Any]] = None) -> None:
    """Copies between a local file and a URL, either way: a download by
    concurrent ranged GETs into a temporary file renamed into place (|dst|
    is whole or untouched), an upload as one PUT or an S3 multipart upload.
    |progress| is called with (bytes done, total); returning True cancels
    (RuntimeError)."""
    s, d = path_arg(src), path_arg(dst)
    errors: _list[BaseException] = []

    def tick(_ctx: Any, done: int, total: int) -> int:
        try:
            return 1 if progress is not None and progress(int(done), int(total)) is True else 0
        except BaseException as e:
            errors.append(e)
            return 1

    cb = ffi.callback(types.progress_fn, tick) if progress is not None else ffi.NULL
    if is_url(s) and is_url(d):
        raise ValueError("copy between two URLs is not supported: one side must be a local file")
    if is_url(s):
        opts = Options(s, storage_options)
        parent = os.path.dirname(os.path.abspath(d))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"{d}: the directory {parent} does not exist")
        rc = lib.dlpx_remote_get(s.encode(), opts.c, d.encode("utf-8", "surrogateescape"), cb,
                                 ffi.NULL)
    elif is_url(d):
        opts = Options(d, storage_options)
        os.stat(s)  # FileNotFoundError, PermissionError, as Python says them
        rc = lib.dlpx_remote_put(s.encode("utf-8", "surrogateescape"), d.encode(), opts.c, cb,
                                 ffi.NULL)
    else:
        raise ValueError("copy needs a URL on one side (use shutil.copy for local files)")
    if errors:
        raise errors[0]
    check(rc)
