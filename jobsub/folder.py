"""The job folder: the one contract between the client and the worker.

Everything the two sides say to each other is a file in the folder::

    <root>/<key>/
        meta.json           backend, backend ids, parameters, versions (written before submitting)
        call.pkl            the function, pickled once per submission
        args/<i>.pkl        task i's arguments, or a whole DelayedSubmission (batch())
        checkpoint/<i>.pkl  task i's checkpointed DelayedSubmission, preferred over args/<i>.pkl
        result/<i>.<r>.pkl  task i, rank r: a framed pickle of the outcome (atomic write)
        log/<i>.<r>.out     stdout and stderr of task i, rank r
        log/<i>.<r>.err
    <root>/.ids/<id>        one line: the key of the submission a backend id belongs to

The client writes ``call.pkl``, ``args/`` and ``meta.json`` *before* it asks
the backend to start anything, so a worker never waits for its inputs.

Results are framed (magic, length, CRC32) on top of the storage's atomic
write, so a truncated or half-copied file is detected and never unpickled as
a result.
"""

from __future__ import annotations

import os
import struct
import time
import zlib

from .storage import open_storage

TYPE_CHECKING = False  # as typing.TYPE_CHECKING: every task imports this module; typing and pathlib wait
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from .storage import Storage

__all__ = ["CorruptResultError", "JobFolder", "JobPaths", "is_url", "split_folder_template"]

_MAGIC = b"JSR1"
_HEADER = struct.Struct(">4sQI")  # magic, payload length, crc32
_SUBDIRS = ("args", "result", "log")


class CorruptResultError(Exception):
    """A result file exists but its framing is wrong (truncated, or not ours)."""


def new_key() -> str:
    """A sortable, unique folder key; no ``_`` so that ``<id>_<index>`` stays parseable."""
    return time.strftime("%Y%m%d-%H%M%S-") + os.urandom(4).hex()


def is_url(folder: str | os.PathLike[str]) -> bool:
    """True for an object-store folder (``s3://bucket/prefix``), False for a path or ``file://``."""
    scheme, sep, _ = os.fspath(folder).partition("://")
    return bool(sep) and scheme != "file"


def split_folder_template(folder: str | os.PathLike[str]) -> tuple[str, str | None]:
    """Split submitit's ``runs/%j`` style folder into (root, template).

    Job data goes under ``root``; when the user's folder contains ``%j`` a
    link named after the job id (``runs/1234``) is made to the job's folder so
    that paths the user expects exist too.
    """
    from pathlib import Path

    text = os.fspath(folder)
    if "%" not in text:
        return text, None
    if is_url(text):  # s3://bucket/prefix/%j: pathlib would fold the "//"
        pieces = text.split("/")
        cut = next(i for i, part in enumerate(pieces) if "%" in part)
        return "/".join(pieces[:cut]), text
    parts = Path(text).parts
    cut = next(i for i, part in enumerate(parts) if "%" in part)
    root = str(Path(*parts[:cut])) if cut else "."
    return root, text


class JobPaths:
    """Local paths of one task's files (submitit's ``job.paths``).

    A plain class, as ``Outcome``: the worker imports this module, and
    ``dataclasses`` would cost every task's start ~5 ms.
    """

    __slots__ = ("folder", "result_pickle", "stderr", "stdout", "submitted_pickle")

    def __init__(self, folder: Path, submitted_pickle: Path, result_pickle: Path, stdout: Path, stderr: Path) -> None:
        self.folder = folder
        self.submitted_pickle = submitted_pickle
        self.result_pickle = result_pickle
        self.stdout = stdout
        self.stderr = stderr

    def _fields(self) -> tuple[Path, ...]:
        return (self.folder, self.submitted_pickle, self.result_pickle, self.stdout, self.stderr)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobPaths) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"JobPaths(folder={self.folder}, stdout={self.stdout}, stderr={self.stderr})"

    @property
    def submission_file(self) -> Path:
        return self.folder / "meta.json"


class JobFolder:
    """One submission's folder in a storage; all knowledge of file names lives here."""

    def __init__(self, storage: Storage, key: str) -> None:
        self.storage = storage
        self.key = key

    # -- creation and identity -------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike[str] | Storage) -> JobFolder:
        storage = open_storage(root) if isinstance(root, (str, os.PathLike)) else root
        folder = cls(storage, new_key())
        local = folder.path
        if local is not None:
            local.mkdir(parents=True, mode=0o700)
            for sub in _SUBDIRS:
                (local / sub).mkdir(mode=0o700)
        return folder

    @classmethod
    def from_url(cls, url: str) -> JobFolder:
        """The folder at ``<root>/<key>`` (a path or a storage URL)."""
        root, _, key = url.rstrip("/").rpartition("/")
        return cls(open_storage(root or "/"), key)

    @property
    def path(self) -> Path | None:
        """The local path of the folder, or None on an object store."""
        return self.storage.local_path(self.key)

    def local_file(self, *parts: str) -> str | None:
        """A file of the folder as a local path string (None on an object store): no pathlib for the worker."""
        return self.storage.local_file(self._k(*parts))

    @property
    def url(self) -> str:
        return f"{self.storage.url.rstrip('/')}/{self.key}"

    def __repr__(self) -> str:
        return f"JobFolder({self.url!r})"

    def _k(self, *parts: str) -> str:
        return "/".join((self.key, *parts))

    # -- inputs ------------------------------------------------------------------
    def write_call(self, data: bytes) -> None:
        self.storage.write_bytes(self._k("call.pkl"), data)

    def read_call(self) -> bytes:
        return self.storage.read_bytes(self._k("call.pkl"))

    def write_args(self, index: int, data: bytes) -> None:
        self.storage.write_bytes(self._k("args", f"{index}.pkl"), data)

    def read_args(self, index: int) -> bytes:
        return self.storage.read_bytes(self._k("args", f"{index}.pkl"))

    def write_checkpoint(self, index: int, data: bytes) -> None:
        self.storage.write_bytes(self._k("checkpoint", f"{index}.pkl"), data)

    def read_checkpoint(self, index: int) -> bytes | None:
        try:
            return self.storage.read_bytes(self._k("checkpoint", f"{index}.pkl"))
        except FileNotFoundError:
            return None

    # -- results -----------------------------------------------------------------
    def result_key(self, index: int, rank: int) -> str:
        return self._k("result", f"{index}.{rank}.pkl")

    def write_result(self, index: int, rank: int, payload: bytes) -> None:
        header = _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload))
        self.storage.write_bytes(self.result_key(index, rank), header + payload)

    def has_result(self, index: int, rank: int) -> bool:
        return self.storage.exists(self.result_key(index, rank))

    def read_result(self, index: int, rank: int) -> bytes | None:
        """The result payload, None if not written yet; CorruptResultError if damaged."""
        try:
            data = self.storage.read_bytes(self.result_key(index, rank))
        except FileNotFoundError:
            return None
        if len(data) < _HEADER.size:
            raise CorruptResultError(f"{self.result_key(index, rank)}: {len(data)} bytes, too short")
        magic, length, crc = _HEADER.unpack_from(data)
        payload = data[_HEADER.size :]
        if magic != _MAGIC or length != len(payload) or zlib.crc32(payload) != crc:
            raise CorruptResultError(
                f"{self.url}/result/{index}.{rank}.pkl is damaged "
                f"(expected {length} bytes, found {len(payload)})"
            )
        return payload

    # -- logs --------------------------------------------------------------------
    def log_key(self, index: int, rank: int, stream: str) -> str:
        return self._k("log", f"{index}.{rank}.{stream}")

    def read_log(self, index: int, rank: int, stream: str) -> str | None:
        try:
            return self.storage.read_bytes(self.log_key(index, rank, stream)).decode(errors="replace")
        except FileNotFoundError:
            return None

    def paths(self, index: int, rank: int) -> JobPaths:
        from pathlib import Path

        base = self.path if self.path is not None else Path(self.url)
        return JobPaths(
            folder=base,
            submitted_pickle=base / "args" / f"{index}.pkl",
            result_pickle=base / "result" / f"{index}.{rank}.pkl",
            stdout=base / "log" / f"{index}.{rank}.out",
            stderr=base / "log" / f"{index}.{rank}.err",
        )

    # -- metadata ----------------------------------------------------------------
    def write_meta(self, meta: dict[str, Any]) -> None:
        import json  # not at module level: every task imports this module, few need json

        self.storage.write_bytes(self._k("meta.json"), json.dumps(meta, indent=1, default=str).encode())

    def read_meta(self) -> dict[str, Any]:
        import json

        meta: dict[str, Any] = json.loads(self.storage.read_bytes(self._k("meta.json")))
        return meta

    def write_marker(self, kind: str, name: str, data: bytes = b"") -> None:
        """Small files a backend uses for its own bookkeeping (``cancel/<i>``, ``exit/<i>.<r>``)."""
        self.storage.write_bytes(self._k(kind, name), data)

    def write_exit(
        self, name: int | str, state: str, reason: str, codes: list[int | None] | None = None
    ) -> None:
        """Record how task ``name`` ended in ``exit/<name>.json``; the first record wins.

        Backends that manage tasks themselves (local, Docker) read their
        states from these markers; a cancellation written first is not
        overwritten by the failure the kill then causes.
        """
        import json

        if self.read_marker("exit", f"{name}.json") is not None:
            return
        record = {"state": state, "reason": reason, "codes": codes or [], "end": time.time()}
        self.write_marker("exit", f"{name}.json", json.dumps(record).encode())

    def read_marker(self, kind: str, name: str) -> bytes | None:
        try:
            return self.storage.read_bytes(self._k(kind, name))
        except FileNotFoundError:
            return None

    def delete(self) -> None:
        self.storage.delete(self.key)


def register_id(storage: Storage, backend_id: str, key: str) -> None:
    """Remember which folder key a backend id belongs to (for ``Job(folder, job_id)``)."""
    storage.write_bytes(f".ids/{backend_id}", key.encode())


def lookup_id(storage: Storage, backend_id: str) -> str | None:
    """The folder key of a backend id (or of its array), None if unknown."""
    candidates = [backend_id]
    base, sep, _ = backend_id.rpartition("_")
    if sep:
        candidates.append(base)
    for candidate in candidates:
        if storage.exists(candidate + "/meta.json"):
            return candidate  # local backend ids are the keys themselves
        try:
            return storage.read_bytes(f".ids/{candidate}").decode().strip()
        except FileNotFoundError:
            continue
    return None
