"""What the object stores (``s3://``, ``gs://``) share: URLs, object names, listings.

An object store has no directories: a job folder ``<key>/`` is the set of
objects whose names start with ``<prefix>/<key>/``.  Keys stay relative to
the store's URL; only these helpers know the bucket's own prefix.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "PAGE_SIZE", "PARALLEL_DELETES", "ObjectNames", "check_key", "settle_conflict", "shared_client", "split_url",
]

logger = logging.getLogger("jobsub.storage")

PAGE_SIZE = 1000
"""Keys per listing call: the most either service returns in one page."""

PARALLEL_DELETES = 8
"""Deletes in flight at once where a service has no multi-object delete (GCS)."""


_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()
MAX_ENVIRONMENTS = 32
"""Clients kept for environments other than this process's (a daemon's submissions); oldest dropped first."""


def _forget_clients() -> None:
    """In a forked child: a connection pool must not cross processes, nor a lock another thread held."""
    global _clients_lock
    _clients.clear()
    _clients_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_clients)


def shared_client(
    kind: str, make: Callable[[], Any], variables: tuple[str, ...], env: Mapping[str, str] | None = None
) -> Any:
    """The process's SDK client of ``kind``, made by ``make()`` on first use.

    SDK clients are thread-safe and cost tens of milliseconds to make, so the
    storages of a process share one.  A forked child makes its own, and so
    does a change of the ``variables`` that tell the SDK where the store is
    (tests move them).  With ``env`` (``jobsub.storage.store_environment`` of
    another process), ``make`` builds the client from ``env``'s values: one per
    distinct ``env``.  ``os.environ`` is never changed to make one.
    """
    if env is not None:
        key: tuple[Any, ...] = (kind, "env", tuple(sorted(env.items())))
    else:
        key = (kind, *(os.environ.get(name) for name in variables))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = make()
            if env is not None:
                others = [k for k in _clients if k[1:2] == ("env",)]
                for old in others[: max(0, len(others) + 1 - MAX_ENVIRONMENTS)]:
                    del _clients[old]
            _clients[key] = client
        return client


def split_url(url: str, scheme: str) -> tuple[str, str]:
    """``scheme://bucket/a//b/`` -> ``("bucket", "a/b")``; a clear error when there is no bucket."""
    head, sep, rest = url.partition("://")
    if not sep or head != scheme:
        raise ValueError(f"not a {scheme}:// URL: {url!r}")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket (expected {scheme}://BUCKET or {scheme}://BUCKET/PREFIX)")
    return bucket, "/".join(part for part in prefix.split("/") if part)


def check_key(key: str) -> str:
    """A key without the slashes around it; refuse the empty key, which would mean the whole store."""
    stripped = key.strip("/")
    if not stripped:
        raise ValueError(f"empty storage key {key!r}")
    return stripped


class ObjectNames:
    """Translation between keys (relative to the store's URL) and the bucket's object names."""

    def __init__(self, prefix: str) -> None:
        self.base = prefix + "/" if prefix else ""

    def name(self, key: str) -> str:
        """The object name of ``key``."""
        return self.base + check_key(key)

    def folder(self, key: str) -> str:
        """The name prefix of everything under ``key/`` (the root itself for ``""``)."""
        stripped = key.strip("/")
        return self.base + stripped + "/" if stripped else self.base

    def key(self, name: str) -> str:
        """The key of an object (or of a common prefix, its trailing ``/`` dropped)."""
        return name[len(self.base) :].rstrip("/")

    def children(self, folder: str, names: Iterable[str]) -> list[str]:
        """Keys of a listing's objects and common prefixes under ``folder``, hidden ones left out.

        The folder's own "directory marker" object (``folder`` itself, as some
        tools create) is not a child.
        """
        keys = {self.key(name) for name in names if name != folder}
        return sorted(key for key in keys if not key.rpartition("/")[2].startswith("."))


def settle_conflict(read: Callable[[], bytes], data: bytes, where: str, *, retried: bool) -> None:
    """A create-only write found its key taken: ``FileExistsError``, unless the object is this very write.

    A retried attempt may find the object that an earlier attempt created
    although its answer was lost (a broken connection, a 500 after the
    write): that object holds our bytes, and the write did succeed.  Only
    then is the object read back; a first attempt that meets an object has
    plainly lost the race.
    """
    if retried:
        try:
            if read() == data:
                logger.debug("%s: created by an earlier attempt of this write, whose answer was lost", where)
                return
        except FileNotFoundError:
            pass  # deleted since: not ours to claim
    raise FileExistsError(f"{where} exists already (a create-only write never replaces an object)")
