"""Where job folders live: a local (or shared) path, and later object stores.

A storage is a handful of primitives on relative keys (``"key/result/0.0.pkl"``);
everything else (layout, framing, atomicity rules) is built on them in
``jobsub.folder``.  Object-store implementations (``s3://``, ``gs://``) plug in
through ``open_storage`` and are imported only when such a URL is used.
"""

from __future__ import annotations

import importlib
import itertools
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["LocalStorage", "MemoryStorage", "Storage", "open_storage"]


@runtime_checkable
class Storage(Protocol):
    """The few primitives a folder store must offer.

    ``read_bytes`` raises ``FileNotFoundError`` for a missing key and any other
    error as itself: an expired credential must never look like "result not
    written yet".  ``write_bytes`` is atomic: a reader sees the old object,
    nothing, or the whole new one.
    """

    url: str

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def local_path(self, key: str) -> Path | None: ...


_counter = itertools.count()


class LocalStorage:
    """A directory on a local or shared (NFS, Lustre) file system.

    Directories are created with mode 0700: job folders hold pickled code and
    results that other users of a shared machine must not read or replace.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)

    def local_path(self, key: str) -> Path:
        return self.root / key

    def read_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # temp file in the same directory + rename: atomic on POSIX file systems
        tmp = path.parent / f".{path.name}.{os.getpid()}.{next(_counter)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.iterdir() if not p.name.startswith(".")
        )

    def delete(self, key: str) -> None:
        path = self.root / key
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"LocalStorage({self.url!r})"


class MemoryStorage:
    """An in-memory store: the reference implementation for tests of the protocol."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._objects: dict[str, bytes] = {}

    def local_path(self, key: str) -> None:
        return None

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._objects[key]
        except KeyError:
            raise FileNotFoundError(f"{self.url}/{key}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        self._objects[key] = bytes(data)

    def exists(self, key: str) -> bool:
        return key in self._objects or any(k.startswith(key.rstrip("/") + "/") for k in self._objects)

    def list(self, prefix: str) -> list[str]:
        prefix = prefix.rstrip("/") + "/"
        children = {prefix + k[len(prefix) :].split("/", 1)[0] for k in self._objects if k.startswith(prefix)}
        return sorted(children)

    def delete(self, key: str) -> None:
        for k in [k for k in self._objects if k == key or k.startswith(key.rstrip("/") + "/")]:
            del self._objects[k]


# scheme -> (dotted class path, install hint); imported only when such a URL is used
_REGISTRY: dict[str, tuple[str, str]] = {
    "s3": ("jobsub.storage.s3:S3Storage", "pip install 'jobsub[aws]'"),
    "gs": ("jobsub.storage.gcs:GCSStorage", "pip install 'jobsub[gcp]'"),
}


def open_storage(url: str | os.PathLike[str]) -> Storage:
    """The storage for ``url``: a path, or ``scheme://bucket/prefix`` of a registered store."""
    text = os.fspath(url)
    scheme, sep, _ = text.partition("://")
    if not sep or scheme == "file":
        return LocalStorage(text.removeprefix("file://"))
    if scheme not in _REGISTRY:
        raise ValueError(
            f"unknown storage scheme {scheme!r} in {text!r}; known: file, {', '.join(_REGISTRY)}"
        )
    target, hint = _REGISTRY[scheme]
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"{scheme}:// job folders need an extra ({hint}) and a backend that supports them: {exc}"
        ) from exc
    storage: Storage = getattr(module, cls_name)(text)
    return storage
