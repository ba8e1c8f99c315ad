"""The call cache: ``cache=True`` returns what a call already computed, or is computing.

::

    submit(fn, *args) with cache=True
      key = hash(code of fn and its same-module callees, closure, defaults      jobsub.hashing
                 + arguments (an upstream Job: its own key)
                 + the parameters that change results: env, setup, ranks, the backend's own
                   ``result_parameters`` such as an image)
      <root>/.cache/<key>/<g>.json, newest generation g ─> its job:
          finished well                ─> that Job, completed: nothing submitted        (hit)
          pending, held or running     ─> that Job: reattached, not submitted twice    (hit)
          failed, cancelled, lost, gone ─> submitted again; generation g+1              (miss)
      a miss claims generation g+1 (created once) before the backend sees anything: of
      two processes submitting the same call at once, one submits, the other reattaches

The entries live in the executor's folder through ``jobsub.folder``, so a
bucket (``s3://``) holds them as well as a disk.  ``jobsub clean --cache
FOLDER`` removes them.  Debug logging (``logging.getLogger("jobsub.cache")``)
says why each lookup hit or missed, and on a miss what changed since the
function's last cached call: its code, its parameters, or its arguments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import Any, NamedTuple

from .backends.base import Backend, get_backend
from .calls import DelayedSubmission, JobRef
from .errors import CorruptResultError
from .folder import (
    JobFolder,
    cache_generations,
    claim_cache_entry,
    clear_cache,
    is_folder_key,
    read_cache_entry,
    read_cache_manifest,
    read_cache_note,
    write_cache_manifest,
    write_cache_note,
)
from .hashing import function_digest, value_digest
from .job import Job
from .parameters import Resolved
from .states import JobState
from .storage import Storage, open_storage
from .submission import task_id

__all__ = ["CallKey", "Cache", "Lookup", "call_key", "clear", "settings_digest"]

logger = logging.getLogger("jobsub.cache")

STALE_SUBMISSION_S = 300.0
"""An entry whose submission never reached its backend this long after it was written is a miss."""
_VERSION = b"jobsub-cache-1"


class CallKey(NamedTuple):
    """A call's cache key and the digests it is made of (what debug logging compares)."""

    key: str
    function: str
    """The function's qualified name (``module.name``)."""
    parts: dict[str, str]
    """``code``, ``args`` and ``params`` digests."""


def _job_identity(obj: Any) -> str | None:
    """What an upstream job contributes to a key: its own cache key, else where its result is."""
    if isinstance(obj, Job):
        return obj.cache_key or f"{obj.folder.url}#{obj.index}"
    if isinstance(obj, JobRef):
        return f"{obj.folder}#{obj.index}"
    return None


def _result_parameters(params: Resolved, backend: Backend) -> dict[str, Any]:
    """The parameters that change what a task computes; time limits, queues and memory do not."""
    common = params.common
    chosen: dict[str, Any] = {
        "env": common.env, "setup": common.setup, "tasks_per_node": common.tasks_per_node, "nodes": common.nodes,
    }
    specific = params.specific
    for name in backend.result_parameters:
        if dataclasses.is_dataclass(specific) and hasattr(specific, name):
            chosen[f"{backend.name}_{name}"] = getattr(specific, name)
    return chosen


def settings_digest(params: Resolved, backend: Backend) -> str:
    """The digest of the parameters that change results (the same for every call of a submission)."""
    return value_digest(_result_parameters(params, backend))


def call_key(call: DelayedSubmission, params: Resolved, backend: Backend, *, code: str = "", settings: str = "") -> CallKey:
    """The cache key of ``call`` submitted with ``params``.

    ``code`` and ``settings``: the function's and the parameters' digests when
    known already (an array hashes them once, not once per call).
    """
    fn = call.function
    code = code or function_digest(fn)
    args = value_digest((call.args, call.kwargs), _job_identity)
    settings = settings or settings_digest(params, backend)
    h = hashlib.blake2b(_VERSION, digest_size=16)
    for part in (code, args, settings):
        h.update(part.encode())
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    return CallKey(h.hexdigest(), name, {"code": code, "args": args, "params": settings})


class Lookup(NamedTuple):
    job: Job[Any] | None
    """The cached job (finished well, or still on its way), None on a miss."""
    generation: int
    """On a miss: the generation a new submission claims."""
    why: str


class Cache:
    """The cache entries of one executor folder.

    Many lookups at once (a ``map_array``) cost one listing of ``.cache``,
    one manifest per submission the hits belong to (not one entry read per
    hit), one ``meta.json`` and one result listing per folder, and one
    result read per hit (is it a success?).  Folders of cached jobs are
    remembered while the executor lives.
    """

    BATCH = 64
    """From this many lookups on, one listing of ``.cache`` replaces a probe per key."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._folders: dict[str, tuple[JobFolder, dict[str, Any], Backend]] = {}
        self._manifests: dict[str, tuple[int, str, int]] = {}  # key -> (generation, folder url, index)
        self._manifests_read: set[str] = set()
        self._marked: set[str] = set()  # folders whose failures are marked in failed/ (newer writers)
        self._failed: dict[str, tuple[float, set[str]]] = {}  # folder url -> (when listed, failed/ names)

    def lookup(self, key: CallKey) -> Lookup:
        """What the cache holds for ``key``; debug logging says why it is a hit or a miss."""
        return self.lookup_many([key])[0]

    def lookup_many(self, keys: list[CallKey]) -> list[Lookup]:
        newest = cache_generations(self.storage) if len(keys) >= self.BATCH else {}
        found = []
        for key in keys:
            generation = newest.get(key.key, -1) if newest or len(keys) >= self.BATCH else None
            lookup = self._lookup(key, generation)
            logger.debug("%s for %s (key %s): %s", "hit" if lookup.job else "miss", key.function, key.key[:16], lookup.why)
            found.append(lookup)
        return found

    def _entry(self, key: str, generation: int) -> tuple[str, int] | None:
        """(folder url, task index) of generation ``generation`` of ``key``: from a manifest read already,
        else from the entry itself (and then its submission's manifest, for the next keys)."""
        known = self._manifests.get(key)
        if known is not None and known[0] == generation:
            return known[1], known[2]
        entry = read_cache_entry(self.storage, key, generation)
        if entry is None or "folder" not in entry:
            return None
        url, index = str(entry["folder"]), int(entry["index"])
        folder_key = self._own_key(url, f".cache/{key}.{generation}.json")
        if folder_key is None:
            return None
        if folder_key not in self._manifests_read:
            self._manifests_read.add(folder_key)
            manifest = read_cache_manifest(self.storage, folder_key) or {}
            for other, (gen, i) in manifest.get("entries", {}).items():
                self._manifests[other] = (int(gen), url, int(i))
        return url, index

    def _own_key(self, url: str, entry: str) -> str | None:
        """The folder key of ``url`` if it is a submission of this executor's own root; None (and a
        warning naming the entry) if the entry points anywhere else: entries are honoured only here."""
        root, _, folder_key = url.rstrip("/").rpartition("/")
        if root == self.storage.url.rstrip("/") and is_folder_key(folder_key):
            return folder_key
        logger.warning(
            "ignoring the cache entry %s/%s: it points at %s, outside this executor's folder %s",
            self.storage.url.rstrip("/"), entry, url, self.storage.url,
        )
        return None

    def _lookup(self, key: CallKey, generation: int | None) -> Lookup:
        if generation is None:
            generation = cache_generations(self.storage, key.key).get(key.key, -1)
        if generation < 0:
            return Lookup(None, 0, self._why_new(key))
        entry = self._entry(key.key, generation)
        if entry is None:
            return Lookup(None, generation + 1, f"its entry {key.key}.{generation} is damaged")
        try:
            job = self._job(entry[0], entry[1], key.key)
        except (FileNotFoundError, CorruptResultError, KeyError) as exc:
            return Lookup(None, generation + 1, f"its job folder {entry[0]} is gone or damaged ({exc})")
        if job.results_present():
            failed = self._marked_failed(job)
            if failed is False:
                return Lookup(job, generation, "completed")
            state = JobState.FAILED if failed else job.state_from_results()
            if state is JobState.COMPLETED:
                return Lookup(job, generation, "completed")
            return Lookup(None, generation + 1, f"job {job.job_id} ended {state}: submitting again")
        status = job.status()
        if job.is_held() and status.state is JobState.UNKNOWN and self._stale(job.folder):
            return Lookup(None, generation + 1, f"job {job.job_id} was never submitted (its client died?)")
        if not status.state.is_final:
            return Lookup(job, generation, f"job {job.job_id} is {status.state}: reattached")
        if job.done_now() and job.error_now() is None:
            return Lookup(job, generation, f"job {job.job_id} completed")
        return Lookup(None, generation + 1, f"job {job.job_id} ended {status.state}: submitting again")

    def _marked_failed(self, job: Job[Any]) -> bool | None:
        """Whether a job whose results are all there failed, from ONE listing of its folder's
        ``failed/`` per lookup round (not a read of each result); None if its folder marks none."""
        folder = job.folder
        if folder.url not in self._marked:
            return None
        known = self._failed.get(folder.url)
        # a listing taken before the results were seen could miss the mark of one of them
        listed = known[1] if known is not None and known[0] >= folder._results_listed_at else None
        now = time.monotonic()
        failed, names = folder.failed_since(job.index, job.rank_list, listed)
        if listed is None:
            self._failed[folder.url] = (now, names)
        return failed

    @staticmethod
    def _stale(folder: JobFolder) -> bool:
        """A submission whose client died before the backend answered, long enough ago."""
        try:
            return time.time() - float(folder.read_meta().get("submitted_at", 0)) > STALE_SUBMISSION_S
        except (FileNotFoundError, CorruptResultError):
            return True

    def _job(self, url: str, index: int, key: str) -> Job[Any]:
        known = self._folders.get(url)
        if known is None:
            folder = JobFolder(self.storage, url.rstrip("/").rpartition("/")[2])  # inside the root (_own_key)
            meta = folder.read_meta()
            backend = get_backend(meta["backend"], meta["backend_config"])
            if meta.get("submissions") and not meta.get("intents"):  # final: kept
                if len(self._folders) > 1024:
                    self._folders.clear()
                    self._failed.clear()
                self._folders[url] = (folder, meta, backend)
                if meta.get("failures_marked"):
                    self._marked.add(url)
        else:
            folder, meta, backend = known
        real = task_id(meta, index)
        if real is None:  # held, or being submitted: the handle follows its record
            return Job.at(folder, index, cache_key=key)
        return Job.bind(backend, folder, real, index, int(meta["ranks"]), cache_key=key)

    def claim(self, key: CallKey, generation: int, folder: JobFolder, index: int) -> bool:
        """Make generation ``generation`` of ``key`` point at task ``index`` of ``folder``; False if
        another process made it first (reattach to theirs, do not submit)."""
        record = {"folder": folder.url, "index": index, "at": time.time(), "function": key.function, **key.parts}
        return claim_cache_entry(self.storage, key.key, generation, record)

    def record(self, folder: JobFolder, claimed: dict[str, tuple[int, int]], key: CallKey) -> None:
        """After a submission's claims: its manifest (key -> generation, index) and the function's note
        (the next miss says what changed).  Neither is needed for correctness: failures are logged."""
        try:
            if claimed:
                write_cache_manifest(self.storage, folder.key, {"folder": folder.url, "entries": claimed})
            write_cache_note(self.storage, _name(key.function), {"function": key.function, **key.parts})
        except OSError as exc:
            logger.debug("could not write the cache manifest of %s: %s", folder.url, exc)

    def _why_new(self, key: CallKey) -> str:
        last = read_cache_note(self.storage, _name(key.function))
        if last is None:
            return f"no cached call of {key.function} yet"
        if last.get("code") != key.parts["code"]:
            return f"the code of {key.function} (or of what it calls in its module) changed"
        if last.get("params") != key.parts["params"]:
            return "parameters that change results (env, setup, ranks, image...) changed"
        return "these arguments were not submitted before"


def _name(function: str) -> str:
    return hashlib.blake2b(function.encode(), digest_size=8).hexdigest()


def clear(folder: str) -> int:
    """Remove every cache entry of the executor folder ``folder``; return how many calls were cached."""
    return clear_cache(open_storage(folder))

