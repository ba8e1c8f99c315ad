"""The ``Storage`` protocol: what a store of job folders must offer (see ``jobsub.storage``)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["Storage"]


@runtime_checkable
class Storage(Protocol):
    """The few primitives a folder store must offer, on ``/``-separated keys relative to ``url``.

    - ``read_bytes`` raises ``FileNotFoundError`` for a missing key and any
      other error as itself: an expired credential must never look like
      "result not written yet".  A local store also refuses (``PermissionError``)
      a file that another user owns or may write: jobsub unpickles what it reads.
    - ``write_bytes`` is atomic: a reader sees the old object, nothing, or the
      whole new one.  With ``create_only`` it never replaces an existing object
      and raises ``FileExistsError`` instead (results are written once: a
      retried task must not replace what a client may have read).  A
      ``private`` object (it carries the job's environment) is readable by
      its owner only where the store has such permissions (a 0600 file).
    - ``exists`` is True for an object or a non-empty prefix, False only when
      truly absent; other failures raise.
    - ``list(prefix)`` gives the direct children of ``prefix`` (full keys,
      sorted, names starting with ``.`` left out) in as few calls as the store
      allows: one listing for an array's markers, never one call per task.
    - ``delete`` removes a key or everything under a prefix.
    - ``local_file``/``local_path``: the key's place on this machine's file
      system, None for an object store.
    - ``check_credentials`` raises a clear error, without a request, when the store's SDK
      finds no credentials at all (naming where it looked): asked before anything is written.
    - ``check_writable`` raises a clear error (naming the bucket or folder and
      the reason) when job folders cannot be written there.
    - ``task_env``: variables a task needs to reach the same store (an
      emulator's endpoint); never credentials.
    """

    url: str

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes, *, create_only: bool = False, private: bool = False) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def local_file(self, key: str) -> str | None: ...
    def local_path(self, key: str) -> Path | None: ...
    def check_credentials(self) -> None: ...
    def check_writable(self) -> None: ...
    def task_env(self) -> dict[str, str]: ...
