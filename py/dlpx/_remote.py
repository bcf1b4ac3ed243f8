"""URLs (http://, https://, s3://) for the tensor-file functions: the
``storage_options`` dict as libdlpx's dlpx_remote_options, with
credentials from botocore's chain when botocore is installed and the
caller gave none (libdlpx itself reads the environment and the shared
credentials file, but not SSO, instance metadata or assume-role)."""

from __future__ import annotations

import os
from typing import Any, Optional

from ._lib import ffi, lib, types

__all__ = ["is_url", "Options"]

#: storage_options keys -> (dlpx_remote_options field, kind)
KEYS = {
    "token": ("bearer_token", "str"),
    "region": ("region", "str"),
    "endpoint_url": ("endpoint", "str"),
    "path_style": ("path_style", "tristate"),
    "aws_access_key_id": ("access_key_id", "str"),
    "aws_secret_access_key": ("secret_access_key", "str"),
    "aws_session_token": ("session_token", "str"),
    "profile": ("profile", "str"),
    "part_size": ("part_size", "size"),
    "concurrency": ("concurrency", "count"),
    "threads": ("threads", "threads"),
    "retries": ("retries", "retries"),
    "timeout": ("timeout", "seconds"),
    "ca_file": ("ca_file", "str"),
    "verify": ("verify_tls", "bool"),
    "checksum": ("checksum", "checksum"),
}

_CHECKSUMS = {None: 0, "none": 0, "crc32": 1}


def is_url(path: Any) -> bool:
    """Whether |path| is an http://, https:// or s3:// URL (a str)."""
    return isinstance(path, str) and bool(lib.dlpx_is_url(path.encode("utf-8", "replace")))


def _botocore_credentials(profile: Optional[str]) -> Optional[tuple[str, str, Optional[str]]]:
    """(key id, secret, token) from botocore's full chain, or None."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return None  # the environment comes first in both chains: libdlpx reads it
    try:
        import botocore.session
    except ImportError:
        return None
    try:
        session = botocore.session.Session(profile=profile)
        creds = session.get_credentials()
        if creds is None:
            return None
        frozen = creds.get_frozen_credentials()
    except Exception:  # noqa: BLE001 - no credentials there: libdlpx's own chain decides
        return None
    if not frozen.access_key:
        return None
    return frozen.access_key, frozen.secret_key, frozen.token


class Options:
    """A dlpx_remote_options built from a storage_options dict; keeps the
    strings it points to alive as long as it lives."""

    def __init__(self, url: str, storage_options: Optional[dict[str, Any]] = None) -> None:
        if not isinstance(storage_options, (dict, type(None))):
            raise TypeError(f"storage_options must be a dict, not "
                            f"{type(storage_options).__name__}")
        so = dict(storage_options or {})
        unknown = sorted(set(so) - set(KEYS))
        if unknown:
            raise TypeError(f"unknown storage_options {', '.join(map(repr, unknown))} "
                            f"(known: {', '.join(sorted(KEYS))})")
        self.c = ffi.new(types.remote_options_p)
        lib.dlpx_remote_options_init(self.c)
        self._keep: list[Any] = []
        if url.lower().startswith("s3://") and not so.get("aws_access_key_id"):
            got = _botocore_credentials(so.get("profile"))
            if got is not None:
                so["aws_access_key_id"], so["aws_secret_access_key"] = got[0], got[1]
                so["aws_session_token"] = got[2]
        for key, value in so.items():
            field, kind = KEYS[key]
            if value is None:
                continue
            setattr(self.c, field, self._convert(key, kind, value))

    def _convert(self, key: str, kind: str, value: Any) -> Any:
        if kind == "str":
            if not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"storage_options[{key!r}] must be a string, not "
                                f"{type(value).__name__}")
            text = os.fspath(value)
            if "\0" in text:
                raise ValueError(f"storage_options[{key!r}] contains a NUL character")
            buf = ffi.new(types.char_array, text.encode("utf-8"))
            self._keep.append(buf)
            return buf
        if kind in ("bool", "tristate"):
            if not isinstance(value, bool):
                raise TypeError(f"storage_options[{key!r}] must be True or False")
            return 1 if value else 0
        if kind == "checksum":
            if value not in _CHECKSUMS:
                raise ValueError(f"storage_options['checksum'] must be None or 'crc32', not "
                                 f"{value!r}")
            return _CHECKSUMS[value]
        if kind == "seconds":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not value > 0 or value != value:
                raise ValueError(f"storage_options['timeout'] must be a positive number of "
                                 f"seconds, not {value!r}")
            return float(value)
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TypeError(f"storage_options[{key!r}] must be an integer, not "
                            f"{type(value).__name__}")
        n = int(value.__index__())
        low = {"size": 1, "count": 1, "threads": 1, "retries": 0}[kind]
        high = {"size": 1 << 40, "count": 256, "threads": 16, "retries": 100}[kind]
        if not low <= n <= high:
            raise ValueError(f"storage_options[{key!r}] must be between {low} and {high}, "
                             f"not {n}")
        return n
