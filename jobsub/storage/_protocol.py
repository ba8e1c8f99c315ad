"""The ``Storage`` protocol: what a store of job folders must offer (see ``jobsub.storage``)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["Storage"]


@runtime_checkable
class Storage(Protocol):
    """The few primitives a folder store must offer.

    ``read_bytes`` raises ``FileNotFoundError`` for a missing key and any other
    error as itself: an expired credential must never look like "result not
    written yet".  ``write_bytes`` is atomic: a reader sees the old object,
    nothing, or the whole new one.  ``local_file``/``local_path`` give the
    key's place on this machine's file system, None for an object store.
    """

    url: str

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def local_file(self, key: str) -> str | None: ...
    def local_path(self, key: str) -> Path | None: ...
