"""The job folder: the one contract between the client and the worker.

Everything the two sides say to each other is a file in the folder::

    <root>/<key>/
        meta.json           backend, backend ids, parameters, versions (written before submitting)
        call.pkl            the function, pickled once per submission
        args/<i>.pkl        task i's arguments, or a whole DelayedSubmission (batch())
        args/<s>.shard      on an object store: the pickles of tasks s*n .. s*n+n-1 (n in call.pkl)
        checkpoint/<i>.pkl  task i's checkpointed DelayedSubmission, preferred over args/<i>.pkl
        requeue/<i>         "checkpointed, run me again", written by the worker before it exits 75
        result/<i>.<r>.pkl  task i, rank r: a framed pickle of the outcome (atomic write)
        failed/<i>.<r>      task i, rank r failed: written BEFORE its result, so a result whose
                            name a later listing of failed/ lacks is a success (without reading it)
        log/<i>.<r>.out     stdout and stderr of task i, rank r
        log/<i>.<r>.err
        log/<i>.<r>.<kind>  what the backend itself saw of the task (a container's own output)
        run/<i>.json        supervised backends (local, Docker): how task i was started
        exit/<i>.json       how task i ended (supervised backends), or that jobsub cancelled it
                            (every backend: the worker then neither runs nor publishes it); first record wins
        <backend>/<name>    a backend's own files (the sbatch script, a container spec)
        held/<g>.json       a held submission's release (or cancel) claim, generation g: created once
        dependents/<key>.json  submission <key> takes tasks of this one as arguments (cancel cascade)
    <root>/.ids/<id>        one line: the key of the submission a backend id belongs to
    <root>/.code/<d>.tar.gz the code package of digest <d>, shared by the submissions of that code
    <root>/.held/<key>      submission <key> is held: what ``jobsub attach`` releases
    <root>/.cache/<h>.<g>.json  cache entry for call hash <h>, generation g (created once)
    <root>/.cache/manifests/<key>.json  the entries submission <key> claimed (many hits, one read)
    <root>/.cache/fn-<d>.json   the key parts of function <d>'s last cached call (why a miss)

The client writes ``call.pkl``, ``args/`` and ``meta.json`` *before* it asks
the backend to start anything, so a worker never waits for its inputs.
Every name above is spelled in this module only; backends and the CLI go
through ``JobFolder``, which goes through the ``Storage`` protocol, so a
folder works the same on a local disk, in memory or on an object store.

Everything that is unpickled (``call.pkl``, ``args/``, ``checkpoint/``,
``result/``) is sealed: framed (magic, length, MAC) on top of the storage's
atomic write, so a truncated or half-copied file is detected, and a file
someone else wrote (or moved from another name) is refused, never unpickled.
The JSON records that decide what runs or what is believed (``meta.json``,
``run/``, ``exit/``, ``held/``, ``dependents/``, a backend's spec, the cache)
carry a ``"mac"`` field the same way.  The MAC's key is the submission's
secret (``jobsub.trust``), which never enters the folder.  Files written
before sealing existed are still read from a local disk, where the owner
check stands; an object store's are refused.
"""

from __future__ import annotations

import os
import time

from . import trust
from .errors import CorruptResultError, InvalidParameterError
from .storage import folder_text, open_storage

TYPE_CHECKING = False  # as typing.TYPE_CHECKING: every task imports this module; typing and pathlib wait
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

    from .states import Status
    from .storage import Storage

__all__ = [
    "JobFolder", "JobPaths", "Submission", "cache_generations", "claim_cache_entry", "clear_cache", "find_submissions",
    "folder_at", "held_keys", "is_folder_key", "lookup_id", "mark_held", "read_cache_entry", "read_cache_manifest",
    "read_cache_note", "register_id", "split_folder_template", "unmark_held", "write_cache_manifest", "write_cache_note",
    "CODE_PACKAGES", "code_package_key",
]

_ROOT_SECRET = ".root"
"""The name a root's own records (the cache, ``.ids/``) are sealed under (``trust.secret``): no folder key
looks like it."""

_SUBDIRS = ("log",)
"""Made with the folder: the worker opens its log files there directly (the others are made by
their first write)."""


def new_key() -> str:
    """A sortable, unique folder key; no ``_`` so that ``<id>_<index>`` stays parseable."""
    return time.strftime("%Y%m%d-%H%M%S-") + os.urandom(4).hex()


def is_folder_key(name: str) -> bool:
    """Whether ``name`` is a key ``new_key`` makes (``20261207-073256-1a2b3c4d``): no path, no ``..``."""
    date, _, rest = name.partition("-")
    clock, _, nonce = rest.partition("-")
    return (
        len(date) == 8 and date.isdigit() and len(clock) == 6 and clock.isdigit()
        and len(nonce) == 8 and all(c in "0123456789abcdef" for c in nonce)
    )


def split_folder_template(folder: str | os.PathLike[str]) -> tuple[str, str | None]:
    """Split submitit's ``runs/%j`` style folder into (root, template).

    Job data goes under ``root``; when the user's folder contains ``%j`` a
    link named after the job id (``runs/1234``) is made to the job's folder so
    that paths the user expects exist too.
    """
    text = os.fspath(folder)
    if "%" not in text:
        return text, None
    scheme, sep, rest = text.rpartition("://")
    parts = rest.split("/")
    cut = next(i for i, part in enumerate(parts) if "%" in part)
    root = "/".join(parts[:cut]).rstrip("/") or ("/" if rest.startswith("/") else ".")
    return f"{scheme}{sep}{root}" if sep else root, text


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


class Submission:
    """One backend submission recorded in a folder's ``meta.json``: an array (or the part of one
    split at the backend's cap) whose task ``i`` is the folder's task ``offset + i``."""

    __slots__ = ("count", "id", "offset", "submitted_at")

    def __init__(self, backend_id: str, offset: int, count: int, submitted_at: float) -> None:
        self.id = backend_id
        self.offset = offset
        self.count = count
        self.submitted_at = submitted_at
        """``time.time()`` when it was sent."""

    def __repr__(self) -> str:
        return f"Submission({self.id!r}, offset={self.offset}, count={self.count})"


def _is_task_id(backend_id: str) -> bool:
    """``<parent>_<index>``: one task of an array."""
    return backend_id.rpartition("_")[2].isdigit() and "_" in backend_id


class JobFolder:
    """One submission's folder in a storage; all knowledge of file names lives here."""

    def __init__(self, storage: Storage, key: str) -> None:
        self.storage = storage
        self.key = key
        self._secret: bytes | None = None
        self._results_listed: set[str] = set()
        self._results_listed_at = float("-inf")
        self._results_first_asked: float | None = None

    # -- creation and identity -------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike[str] | Storage, mode: int | None = None) -> JobFolder:
        """A new, empty submission folder under ``root``.

        ``mode``: the folder's own permissions (``folder_mode``); by default
        the umask decides who may read it.  Never writable by group or others.
        """
        storage = open_storage(root) if isinstance(root, (str, os.PathLike)) else root
        folder = cls(storage, new_key())
        local = folder.local_file()
        if local is not None:
            try:
                os.mkdir(local, 0o755)
            except FileNotFoundError:  # the executor's folder itself is gone: make it again
                os.makedirs(os.path.dirname(local), mode=0o755, exist_ok=True)
                os.mkdir(local, 0o755)
            if mode is not None:
                os.chmod(local, mode & ~0o022)
            for sub in _SUBDIRS:
                os.mkdir(os.path.join(local, sub), 0o755)
        return folder

    @classmethod
    def from_url(cls, url: str, *, env: Mapping[str, str] | None = None) -> JobFolder:
        """The folder at ``<root>/<key>`` (a path or a storage URL).

        ``env``: reach an object store with the SDK environment of another
        process (``jobsub.storage.open_storage``), as a daemon does for a submission.
        """
        root, _, key = url.rstrip("/").rpartition("/")
        return cls(open_storage(root or "/", env), key)

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

    # -- sealing: who wrote a file (jobsub.trust) --------------------------------------------------
    @property
    def secret(self) -> bytes:
        """The submission's secret (from the task's environment, or derived from this user's key)."""
        if self._secret is None:
            self._secret = trust.secret(self.key)
        return self._secret

    def _seal(self, key: str, payload: bytes) -> bytes:
        return trust.seal(self.secret, key, payload)

    def _unseal(self, key: str, data: bytes) -> bytes:
        """The payload of a sealed file; ``CorruptResultError`` naming it if damaged or not ours."""
        return trust.unseal(_where(self.storage, key), self.secret, key, data, legacy=_legacy_ok(self.storage))

    def _open_json(self, key: str, data: bytes) -> Any:
        return trust.open_json(_where(self.storage, key), self.secret, key, data, legacy=_legacy_ok(self.storage))

    def _read_sealed(self, *parts: str) -> bytes | None:
        key = self._k(*parts)
        try:
            data = self.storage.read_bytes(key)
        except FileNotFoundError:
            return None
        except PermissionError as exc:  # another user's file, or one others may write: never unpickled
            raise CorruptResultError(str(exc), final=True) from None
        return self._unseal(key, data)

    # -- inputs ------------------------------------------------------------------
    def write_call(self, data: bytes) -> None:
        key = self._k("call.pkl")
        self.storage.write_bytes(key, self._seal(key, data))

    def read_call(self) -> bytes:
        data = self._read_sealed("call.pkl")
        if data is None:
            raise FileNotFoundError(f"{self.url}/call.pkl")
        return data

    def write_args(self, tasks: list[bytes], shard: int = 1) -> None:
        """Every task's pickled arguments: one file each, or ``shard`` tasks an object.

        On an object store every write is a request (~20 ms on a busy
        emulator, and paid by the request on a cloud): an array of 10,000 is
        then a few objects, not 10,000.  A shard holds each task's own pickle,
        so a task unpickles only its own arguments.
        """
        if shard <= 1:
            for index, data in enumerate(tasks):
                key = self._k("args", f"{index}.pkl")
                self.storage.write_bytes(key, self._seal(key, data))
            return
        import pickle

        for first in range(0, len(tasks), shard):
            chunk = pickle.dumps(tasks[first : first + shard], protocol=pickle.HIGHEST_PROTOCOL)
            key = self._k("args", f"{first // shard}.shard")
            self.storage.write_bytes(key, self._seal(key, chunk))

    def read_args(self, index: int, shard: int = 1) -> bytes:
        """Task ``index``'s pickled arguments (from its shard, when they were written ``shard`` a file)."""
        name = f"{index}.pkl" if shard <= 1 else f"{index // shard}.shard"
        data = self._read_sealed("args", name)
        if data is None:
            raise FileNotFoundError(f"{self.url}/args/{name}")
        if shard <= 1:
            return data
        import pickle

        chunk: list[bytes] = pickle.loads(data)
        return chunk[index % shard]

    def write_checkpoint(self, index: int, data: bytes) -> None:
        key = self._k("checkpoint", f"{index}.pkl")
        self.storage.write_bytes(key, self._seal(key, data))

    def read_checkpoint(self, index: int) -> bytes | None:
        return self._read_sealed("checkpoint", f"{index}.pkl")

    # -- results -----------------------------------------------------------------
    def result_key(self, index: int, rank: int) -> str:
        return self._k("result", f"{index}.{rank}.pkl")

    def result_url(self, index: int, rank: int) -> str:
        """Where the result is, as error messages name it."""
        return f"{self.url}/result/{index}.{rank}.pkl"

    def write_result(self, index: int, rank: int, payload: bytes, *, ok: bool) -> None:
        """Create the result, once: ``FileExistsError`` if a twin of the task wrote it first.

        A failure is marked in ``failed/`` first: one listing then tells the
        successes of a whole array (``succeeded``) without reading each result.
        """
        key = self.result_key(index, rank)
        if not ok:
            if self.storage.exists(key):
                raise FileExistsError(key)  # a twin's result stands: it must not look failed
            self.storage.write_bytes(self._k("failed", f"{index}.{rank}"), b"")
        self.storage.write_bytes(key, self._seal(key, payload), create_only=True)

    def failed_since(self, index: int, ranks: list[int], listed: set[str] | None) -> tuple[bool, set[str]]:
        """Whether task ``index`` (whose results are all there) failed, by a listing of ``failed/``.

        ``listed``: a listing taken after the results were seen (marks precede
        results, so it holds the mark of every failed one); None: list now.
        Returns the answer and the listing, for the next task of the folder.
        """
        if listed is None:
            listed = {key.rpartition("/")[2] for key in self.storage.list(self._k("failed"))}
        return any(f"{index}.{rank}" in listed for rank in ranks), listed

    def has_results(self, index: int, ranks: list[int], max_age_s: float) -> bool:
        """Whether task ``index`` has the results of all these ranks, by a listing of ``result/``.

        The listing is shared by every handle of this folder and taken again
        at most every ``max_age_s``: waiting on 10,000 tasks of an array costs
        one listing per interval (ten paged calls on an object store), not
        10,000 lookups.  A young wait lists sooner, at most a quarter of the
        time since the folder was first asked (from 0.1 s): a task of one
        second has its result seen a fraction of a second late, not
        ``max_age_s`` late, for about fifteen more listings in the wait's
        first seconds.
        """
        now = time.monotonic()
        if self._results_first_asked is None:
            self._results_first_asked = now
        names = self._results_listed
        wanted = [f"{index}.{rank}.pkl" for rank in ranks]
        if all(name in names for name in wanted):
            return True  # results are written once: a name seen stays true
        # a short listing (a small array on a disk) costs microseconds: taken at every look, so a
        # result is seen the moment it lands; a long one at most every ``max_age_s``
        short = len(names) < 256 and self.storage.local_file("") is not None
        young = max(_YOUNG_LIST_S, (now - self._results_first_asked) / 4)
        if now - self._results_listed_at < (max_age_s / 20 if short else min(max_age_s, young)):
            return False
        self._results_listed_at = now
        listed = self.result_names()
        self._results_listed = listed
        return all(name in listed for name in wanted)

    def has_result(self, index: int, rank: int) -> bool:
        return self.storage.exists(self.result_key(index, rank))

    def read_result(self, index: int, rank: int) -> bytes | None:
        """The result payload, None if not written yet; CorruptResultError if damaged or not trusted."""
        return self._read_sealed("result", f"{index}.{rank}.pkl")

    # -- logs --------------------------------------------------------------------
    def log_key(self, index: int, rank: int, stream: str) -> str:
        return self._k("log", f"{index}.{rank}.{stream}")

    def read_log(self, index: int, rank: int, stream: str) -> str | None:
        try:
            return self.storage.read_bytes(self.log_key(index, rank, stream)).decode(errors="replace")
        except FileNotFoundError:
            return None

    def link_submitit_log(self, where: str, job_id: str, index: int, rank: int) -> None:
        """``<where>/<job_id>_<rank>_log.out`` (and ``.err``): submitit's log names, as links to ours.

        Tools built on submitit read these names by hand (dora's ``--log``).
        Made by the task itself when it starts (a submission of 10,000 tasks
        would otherwise spend seconds on links); local folders only, and a
        link that cannot be made is no error.
        """
        for stream in ("out", "err"):
            target = self.local_file("log", f"{index}.{rank}.{stream}")
            if target is None or not os.path.exists(target):  # an object store; err merged into out
                continue
            try:
                os.symlink(os.path.relpath(target, where), os.path.join(where, f"{job_id}_{rank}_log.{stream}"))
            except OSError:
                continue

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

        # private: it holds the job's parameters, ``env`` values among them
        key = self._k("meta.json")
        body = json.dumps(meta, indent=1, default=str).encode()
        self.storage.write_bytes(key, trust.seal_json(self.secret, key, body), private=True)

    def read_meta(self) -> dict[str, Any]:
        """The submission's record; ``CorruptResultError`` (naming the file) if it is damaged or not ours."""
        key = self._k("meta.json")
        try:
            data = self.storage.read_bytes(key)
        except PermissionError as exc:
            raise CorruptResultError(str(exc), final=True) from None
        try:
            meta = self._open_json(key, data)
        except ValueError as exc:
            raise CorruptResultError(f"{self.url}/meta.json is damaged ({exc})", final=True) from None
        if not isinstance(meta, dict) or "backend" not in meta:
            raise CorruptResultError(f"{self.url}/meta.json is not a jobsub submission record", final=True)
        return meta

    def submission(self, backend_id: str) -> Submission | None:
        """The record of one submission of this folder by its backend id (an array's, for a task
        ``<id>_<i>``); None if the folder does not record it (yet), or its record is unreadable."""
        parent = backend_id.rpartition("_")[0] if _is_task_id(backend_id) else backend_id
        try:
            parts = self.read_meta().get("submissions", [])
        except (OSError, CorruptResultError):
            return None
        for part in parts:
            if str(part.get("id")) in (backend_id, parent):
                return Submission(
                    str(part["id"]), int(part.get("offset", 0)), int(part.get("count", 1)),
                    float(part.get("submitted_at", 0.0)),
                )
        return None

    def waits_for(self, meta: dict[str, Any] | None = None) -> dict[int, list[list[Any]]]:
        """What each task takes as arguments from other jobs: task index -> ``[folder URL, index,
        [ranks]]`` of each upstream task (tasks that wait for none are left out); ``meta``: the
        record, if already read."""
        record = self.read_meta() if meta is None else meta
        return {int(index): list(refs) for index, refs in record.get("waits_for", {}).items()}

    def is_array(self) -> bool:
        """Whether the submission is an array (its tasks' ids are ``<id>_<i>``); False for a folder
        not written yet."""
        return self.exists() and bool(self.read_meta().get("array", False))

    def task_count(self) -> int:
        """How many tasks the submission has (1 for a folder not written yet)."""
        return int(self.read_meta().get("count", 1)) if self.exists() else 1

    def parameter(self, name: str, *, common: bool = False) -> Any:
        """A parameter the submission was made with (its backend's own, or a common one if
        ``common``), None if not recorded."""
        return self.read_meta().get("parameters", {}).get("common" if common else "specific", {}).get(name)

    def _read(self, *parts: str) -> bytes | None:
        try:
            return self.storage.read_bytes(self._k(*parts))
        except FileNotFoundError:
            return None

    def _read_json(self, *parts: str) -> dict[str, Any] | None:
        """A small sealed JSON record; a damaged or forged one reads as ``{"damaged": why}``, never as an
        exception.

        One bad marker must not break the poll of every other job of the process.
        """
        try:
            data = self._read(*parts)
        except PermissionError as exc:
            return {"damaged": str(exc)}
        if data is None:
            return None
        try:
            record = self._open_json(self._k(*parts), data)
        except (ValueError, CorruptResultError) as exc:
            return {"damaged": f"{self.url}/{'/'.join(parts)} is damaged ({exc})"}
        return record if isinstance(record, dict) else {"damaged": f"{self.url}/{'/'.join(parts)} is not a record"}

    def _json(self, record: dict[str, Any], *parts: str) -> tuple[str, bytes]:
        """The key and the sealed bytes of ``record`` stored as ``parts``."""
        key = self._k(*parts)
        return key, trust.seal_json(self.secret, key, _json_bytes(record))

    def _write_json(self, record: dict[str, Any], *parts: str) -> None:
        self.storage.write_bytes(*self._json(record, *parts))

    # -- what supervised backends record (local, Docker) ----------------------------------
    def write_run(self, name: int | str, record: dict[str, Any]) -> None:
        """``run/<name>.json``: how task ``name`` was started (pids or containers, start, attempt)."""
        self._write_json(record, "run", f"{name}.json")

    def read_run(self, name: int | str) -> dict[str, Any] | None:
        return self._read_json("run", f"{name}.json")

    def write_exit(
        self, name: int | str, state: str, reason: str, codes: list[int | None] | None = None
    ) -> bool:
        """Record how task ``name`` ended in ``exit/<name>.json``; the first record wins.

        Backends that manage tasks themselves (local, Docker) read their
        states from these markers; a cancellation written first is not
        overwritten by the failure the kill then causes.  Returns False if
        a record existed already.
        """
        record = {"state": state, "reason": reason, "codes": codes or [], "end": time.time()}
        try:
            self.storage.write_bytes(*self._json(record, "exit", f"{name}.json"), create_only=True)
        except FileExistsError:
            return False
        return True

    def read_exit(self, name: int | str) -> dict[str, Any] | None:
        """How task ``name`` ended (``state``, ``reason``, ``codes``), None if not recorded.

        A damaged record reads as FAILED with the damage as its reason.
        """
        record = self._read_json("exit", f"{name}.json")
        if record is not None and "damaged" in record:
            return {"state": "FAILED", "reason": f"its exit record {record['damaged']}", "codes": []}
        return record

    def recorded_end(self, name: int | str) -> Status | None:
        """How task ``name`` ended, if its exit record says a final state; None otherwise.

        Whoever decides a task's end writes it here first (``Job.cancel``; a backend before it
        deletes a job it ended: preempted too often, an image that cannot start; the kit's
        ``PendingTooLong``), so that every process tells the same story: a job the scheduler
        no longer lists reads this state and reason rather than LOST.
        """
        from .states import JobState, Status  # not at import: the worker starts without typing

        record = self.read_exit(name)
        if record is None:
            return None
        try:
            state = JobState(record.get("state"))
        except ValueError:  # a state this version does not know: no end it can tell
            return None
        return Status(state, str(record.get("reason") or "")) if state.is_final else None

    def cancel_reason(self, name: int | str) -> str | None:
        """Why task ``name`` was cancelled, if its exit record says CANCELLED; None otherwise.

        ``Job.cancel`` records a cancel before it asks the scheduler: the worker reads it before
        it runs the task and before it publishes its result (only a cancel stops it: another
        recorded end is a backend's, whose pods are gone).
        """
        record = self.read_exit(name)  # a raw read: every task asks, and its worker starts lean
        if record is None or record.get("state") != "CANCELLED":
            return None
        return str(record.get("reason") or "cancelled")

    def result_names(self) -> set[str]:
        """The names in ``result/`` (``<index>.<rank>.pkl``): ONE listing, whatever the size of the array."""
        return {key.rpartition("/")[2] for key in self.storage.list(self._k("result"))}

    def tasks_with_result(self) -> set[int]:
        """Indexes of the tasks whose rank 0 wrote its result: ONE listing of ``result/``."""
        names = self.result_names()
        return {int(name.partition(".")[0]) for name in names if name.endswith(".0.pkl") and name.partition(".")[0].isdigit()}

    def ended(self) -> set[str]:
        """Names of the tasks with an exit record: ONE listing, whatever the size of the array."""
        return {key.rpartition("/")[2].removesuffix(".json") for key in self.storage.list(self._k("exit"))}

    def started(self) -> set[str]:
        """Names of the tasks with a run record (one listing)."""
        return {key.rpartition("/")[2].removesuffix(".json") for key in self.storage.list(self._k("run"))}

    def mark_requeue(self, index: int) -> None:
        """The worker checkpointed task ``index`` and asks to run again (backends that requeue themselves)."""
        self.storage.write_bytes(self._k("requeue", str(index)), b"")

    def take_requeue(self, index: int) -> bool:
        """Whether task ``index`` asked to run again; the request is consumed."""
        if not self.storage.exists(self._k("requeue", str(index))):
            return False
        self.storage.delete(self._k("requeue", str(index)))
        return True

    # -- a backend's own files -----------------------------------------------------------------
    def write_backend_file(self, backend: str, name: str, data: bytes, *, private: bool = True) -> None:
        """``<backend>/<name>``: a script, a spec, what the backend needs again later.

        Private by default: a spec or a script carries the job's environment.
        """
        self.storage.write_bytes(self._k(backend, name), data, private=private)

    def read_backend_file(self, backend: str, name: str) -> bytes | None:
        return self._read(backend, name)

    def write_backend_json(self, backend: str, name: str, record: dict[str, Any]) -> None:
        """``<backend>/<name>``, a sealed JSON record (a spec a later adoption runs again; private)."""
        self.storage.write_bytes(*self._json(record, backend, name), private=True)

    def read_backend_json(self, backend: str, name: str) -> dict[str, Any] | None:
        return self._read_json(backend, name)

    def add_backend_file(self, backend: str, name: str, source: str) -> None:
        """``<backend>/<name>`` from the local file ``source``: a hard link where possible, else a copy."""
        target = self.local_file(backend, name)
        if target is not None:
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            try:
                os.link(source, target)
                return
            except FileExistsError:
                return
            except OSError:
                pass  # another file system: copy
        with open(source, "rb") as f:
            self.write_backend_file(backend, name, f.read(), private=False)

    def backend_file(self, backend: str, name: str) -> str | None:
        """The local path of ``<backend>/<name>`` (None on an object store)."""
        return self.local_file(backend, name)

    def write_task_log(self, index: int, rank: int, kind: str, data: bytes) -> None:
        """``log/<i>.<r>.<kind>``: the worker's streams (``out``, ``err``), or what the backend saw."""
        self.storage.write_bytes(self.log_key(index, rank, kind), data)

    # -- held submissions, and the submissions waiting on this one (jobsub.hold) -------------------
    def claim_release(self, generation: int, record: dict[str, Any]) -> bool:
        """Create ``held/<generation>.json``; False if it exists: another process releases it."""
        try:
            self.storage.write_bytes(*self._json(record, "held", f"{generation}.json"), create_only=True)
        except FileExistsError:
            return False
        return True

    def release_claims(self) -> list[tuple[int, dict[str, Any]]]:
        """The release claims made so far, oldest generation first (one listing)."""
        claims = []
        for key in self.storage.list(self._k("held")):
            name = key.rpartition("/")[2].removesuffix(".json")
            if name.isdigit():
                claims.append((int(name), self._read_json("held", f"{name}.json") or {}))
        return sorted(claims, key=lambda claim: claim[0])

    def write_dependent(self, downstream_key: str, record: dict[str, Any]) -> None:
        """``dependents/<downstream_key>.json``: which of our tasks that submission takes as arguments."""
        self._write_json(record, "dependents", f"{downstream_key}.json")

    def dependents(self) -> list[dict[str, Any]]:
        """The records ``write_dependent`` left (one listing, one read each)."""
        records = []
        for key in self.storage.list(self._k("dependents")):
            record = self._read_json("dependents", key.rpartition("/")[2])
            if record is not None and "damaged" not in record:
                records.append(record)
        return records

    def exists(self) -> bool:
        """Whether the submission's folder is still there (someone may have deleted it)."""
        return self.storage.exists(self._k("meta.json"))

    def backend_ids(self) -> list[str]:
        """The ids the backend gave the submission's parts ([] before it was submitted, or unreadable)."""
        try:
            parts = self.read_meta().get("submissions") or []
        except (OSError, CorruptResultError):
            return []
        return [str(part["id"]) for part in parts if isinstance(part, dict) and "id" in part]

    def delete(self) -> list[str]:
        """The folder, and the root's ``.ids/`` entries that name it: nothing of the submission is left
        for ``Job(folder, id)`` to find (a removed folder's id would name a folder that is not there).
        Returns the backend ids the submission had."""
        ids = self.backend_ids()
        self.storage.delete(self.key)
        for backend_id in ids:
            _forget_id(self.storage, backend_id, self.key)
        return ids


_YOUNG_LIST_S = 0.1
"""The shortest wait between two listings of a folder's results (a young wait's)."""


def _json_bytes(record: dict[str, Any]) -> bytes:
    import json

    return json.dumps(record).encode()


def _where(storage: Storage, key: str) -> str:
    return f"{storage.url.rstrip('/')}/{key}"


def _legacy_ok(storage: Storage) -> bool:
    """Files written before sealing are read from a local disk only, where the owner check stands."""
    return storage.local_file("") is not None


def register_id(storage: Storage, backend_id: str, key: str) -> None:
    """Remember which folder key a backend id belongs to (for ``Job(folder, job_id)``)."""
    name = f".ids/{backend_id}"
    storage.write_bytes(name, f"{key} {trust.mac(trust.secret(_ROOT_SECRET), name, key.encode()).hex()}".encode())


def _forget_id(storage: Storage, backend_id: str, key: str) -> None:
    """Remove ``.ids/<backend_id>`` if it names folder ``key`` (a backend may give an id out again)."""
    name = f".ids/{backend_id}"
    try:
        named = storage.read_bytes(name).decode(errors="replace").partition(" ")[0]
    except FileNotFoundError:
        return
    if named == key:
        storage.delete(name)


CODE_PACKAGES = ".code"
"""``<root>/.code/``: code packages (``jobsub.cloud.container``), and a local root's package cache."""


def code_package_key(name: str) -> str:
    """Where the code package ``name`` (its digest's first 16 hex digits) goes under the root."""
    return f"{CODE_PACKAGES}/{name}.tar.gz"


def mark_held(storage: Storage, key: str) -> None:
    """``.held/<key>``: one listing of the root finds every held submission (``jobsub attach``)."""
    storage.write_bytes(f".held/{key}", b"")


def unmark_held(storage: Storage, key: str) -> None:
    storage.delete(f".held/{key}")


def held_keys(storage: Storage) -> list[str]:
    """Keys of the submissions marked held under ``storage``'s root."""
    return [key.rpartition("/")[2] for key in storage.list(".held")]


# -- the call cache (jobsub.cache): flat, so that one listing sees every entry ---------------------------------

def _read_json_key(storage: Storage, key: str) -> dict[str, Any] | None:
    """A small sealed JSON record at ``key`` of the root; None if it is missing or damaged.

    ``CorruptResultError`` (naming it) if it is not this user's: a cache
    entry decides which result a call gets.
    """
    try:
        data = storage.read_bytes(key)
    except FileNotFoundError:
        return None
    except PermissionError as exc:  # another user's file (a root others may write into)
        raise CorruptResultError(str(exc), final=True) from None
    try:
        record = trust.open_json(
            _where(storage, key), trust.secret(_ROOT_SECRET), key, data, legacy=_legacy_ok(storage)
        )
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _write_json_key(storage: Storage, key: str, record: dict[str, Any], *, create_only: bool = False) -> None:
    sealed = trust.seal_json(trust.secret(_ROOT_SECRET), key, _json_bytes(record))
    storage.write_bytes(key, sealed, create_only=create_only)


def cache_generations(storage: Storage, key: str | None = None) -> dict[str, int]:
    """The newest generation of each cache entry: of ``key`` by probing (0, 1, ...: a call is rarely
    submitted again), or of every entry by ONE listing of ``.cache`` (many lookups at once)."""
    if key is None:
        newest: dict[str, int] = {}
        for name in storage.list(".cache"):
            entry, _, number = name.rpartition("/")[2].removesuffix(".json").partition(".")
            if len(entry) == 32 and number.isdigit() and int(number) >= newest.get(entry, 0):
                newest[entry] = int(number)
        return newest
    generation = -1
    while storage.exists(f".cache/{key}.{generation + 1}.json"):
        generation += 1
    return {key: generation} if generation >= 0 else {}


def read_cache_entry(storage: Storage, key: str, generation: int) -> dict[str, Any] | None:
    return _read_json_key(storage, f".cache/{key}.{generation}.json")


def claim_cache_entry(storage: Storage, key: str, generation: int, record: dict[str, Any]) -> bool:
    """Create generation ``generation`` of entry ``key``; False if another process made it first."""
    try:
        _write_json_key(storage, f".cache/{key}.{generation}.json", record, create_only=True)
    except FileExistsError:
        return False
    return True


def write_cache_manifest(storage: Storage, folder_key: str, record: dict[str, Any]) -> None:
    """``.cache/manifests/<folder key>.json``: every entry a submission claimed, read in one go."""
    _write_json_key(storage, f".cache/manifests/{folder_key}.json", record)


def read_cache_manifest(storage: Storage, folder_key: str) -> dict[str, Any] | None:
    return _read_json_key(storage, f".cache/manifests/{folder_key}.json")


def write_cache_note(storage: Storage, name: str, record: dict[str, Any]) -> None:
    _write_json_key(storage, f".cache/fn-{name}.json", record)


def read_cache_note(storage: Storage, name: str) -> dict[str, Any] | None:
    return _read_json_key(storage, f".cache/fn-{name}.json")


def clear_cache(storage: Storage) -> int:
    """Remove every cache entry under ``storage``'s root; return how many calls were cached."""
    count = len(cache_generations(storage))
    storage.delete(".cache")
    return count


def folder_at(path: str | os.PathLike[str]) -> JobFolder:
    """The submission whose own folder is ``path``: a path (a ``runs/1234`` link is followed) or a URL."""
    text = folder_text(path).rstrip("/")
    if "://" not in text:
        text = os.path.realpath(os.path.expanduser(text))
    return JobFolder.from_url(text)


def find_submissions(storage: Storage, depth: int = 2) -> list[JobFolder]:
    """The submissions at ``storage``'s root: itself, its children, or (a folder holding several
    executors' folders) its grandchildren, as ``jobsub status`` shows them."""
    if storage.exists("meta.json"):
        parent, _, key = storage.url.rstrip("/").rpartition("/")
        return [JobFolder(open_storage(parent or "/"), key)]
    level = [""]
    for _ in range(depth):
        children = [c for prefix in level for c in storage.list(prefix)]
        found = [c for c in children if storage.exists(f"{c}/meta.json")]
        if found:
            return [JobFolder(storage, key) for key in sorted(found)]
        level = children
    return []


def lookup_id(storage: Storage, backend_id: str) -> str | None:
    """The folder key of a backend id (or of its array), None if unknown.

    Raises:
        InvalidParameterError: ``backend_id`` is no id but a path (``../x``), or nothing.
    """
    if (
        not isinstance(backend_id, str) or not backend_id.strip() or backend_id.startswith(".")
        or any(c in backend_id for c in "/\\") or not backend_id.isprintable()
    ):
        raise InvalidParameterError(f"{backend_id!r} is not a job id (ids hold no path separators and no leading dot)")
    candidates = [backend_id]
    base, sep, _ = backend_id.rpartition("_")
    if sep:
        candidates.append(base)
    for candidate in candidates:
        # the index first: a ``runs/%j`` link named after the id looks like a folder, but is not one
        name = f".ids/{candidate}"
        try:
            key, _, tag = storage.read_bytes(name).decode().strip().partition(" ")
        except FileNotFoundError:
            if storage.exists(candidate + "/meta.json"):
                return candidate  # local backend ids are the keys themselves
            continue
        except PermissionError as exc:
            raise CorruptResultError(str(exc), final=True) from None
        if tag or storage.local_file("") is None:  # unsealed: written before sealing, on a local disk only
            try:
                valid = trust.verify(trust.secret(_ROOT_SECRET), name, key.encode(), bytes.fromhex(tag))
            except ValueError:
                valid = False
            if not valid:
                raise trust.not_ours(_where(storage, name), "does not carry this user's authentication code")
        return key
    return None
