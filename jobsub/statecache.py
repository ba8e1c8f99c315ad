"""One state cache per user and cluster, shared by every process of the user on this machine.

::

    process A: states(ids) ──lock──> fresh enough? ── yes ──> answer from the file
                                         └─ no ──> ONE scheduler query for A's ids AND the ids
                                                   other processes asked about lately ──> file
    process B, a moment later: its ids are in the file, fresh ──> no query at all

Ten notebooks and a ``jobsub status`` loop watching one cluster then cost
one poll per interval, not ten: gentle on a controller every user shares.
The file lives in the user's runtime directory (``jobsub.runtime``), under a
``filelock``.  A cache that cannot be used (a full disk, a lock held too
long, a damaged file) is never an error: the caller asks the scheduler
itself, as if there were no cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import filelock

from .runtime import runtime_dir
from .states import JobState, Status
from .storage import LocalStorage

__all__ = ["SharedStateCache"]

logger = logging.getLogger("jobsub")

_VERSION = 1
_FORGET_AFTER_S = 600.0


class SharedStateCache:
    """``{"jobs": {id: [state, reason, answered at, last wanted at]}}`` in one file per cluster.

    Args:
        name: the backend and cluster it caches (``"slurm-<digest of its config>"``).
    """

    def __init__(self, name: str) -> None:
        self.path = runtime_dir("state") / f"{name}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The cache's content, read and (if changed) written back under its lock.

        Without a usable cache the caller gets a throwaway ``{}`` and goes on.
        """
        lock = filelock.FileLock(str(self.path) + ".lock", timeout=30)
        try:
            lock.acquire()
        except (filelock.Timeout, OSError) as exc:
            logger.warning("state cache %s unusable (%s): asking the scheduler directly", self.path, exc)
            yield {}
            return
        try:
            try:
                cache = json.loads(self.path.read_text())
            except (OSError, ValueError):
                cache = None
            if not isinstance(cache, dict) or cache.get("version") != _VERSION:
                cache = {"version": _VERSION, "jobs": {}}  # missing, damaged or from another jobsub
            before = json.dumps(cache, sort_keys=True)
            yield cache
            if json.dumps(cache, sort_keys=True) != before:
                try:
                    LocalStorage(self.path.parent).write_bytes(self.path.name, json.dumps(cache).encode())
                except OSError as exc:  # a full disk: the answer is still good, only not shared
                    logger.warning("cannot write the state cache %s: %s", self.path, exc)
        finally:
            lock.release()

    @staticmethod
    def get(cache: dict[str, Any], ids: list[str], *, newer_than: float) -> dict[str, Status] | None:
        """Every id's status if each is final or was answered after ``newer_than``; else None."""
        jobs = cache.get("jobs", {})
        answer = {}
        for backend_id in ids:
            entry = jobs.get(backend_id)
            if entry is None:
                return None
            state = JobState(entry[0])
            if not state.is_final and entry[2] <= newer_than:
                return None
            answer[backend_id] = Status(state, entry[1])
        return answer

    @staticmethod
    def wanted(cache: dict[str, Any], now: float, within: float) -> list[str]:
        """Unfinished ids some process asked about in the last ``within`` seconds."""
        return [
            i for i, (state, _r, _at, wanted) in cache.get("jobs", {}).items()
            if wanted >= now - within and not JobState(state).is_final
        ]

    @staticmethod
    def put(cache: dict[str, Any], answer: dict[str, Status], now: float, ids: list[str]) -> None:
        """Record ``answer`` (``ids``: the ones this process wants); forget entries idle for 10 min."""
        if "jobs" not in cache:
            return  # the lock could not be taken: nothing to share
        jobs = cache["jobs"]
        wanted = set(ids)
        for backend_id, status in answer.items():
            old = jobs.get(backend_id)
            seen = now if backend_id in wanted else (old[3] if old else 0.0)
            jobs[backend_id] = [status.state.value, status.reason, now, seen]
        for backend_id in [i for i, e in jobs.items() if max(e[2], e[3]) < now - _FORGET_AFTER_S]:
            del jobs[backend_id]

    @staticmethod
    def drop(cache: dict[str, Any], ids: list[str]) -> None:
        """Forget these ids and the tasks of these arrays (after a cancel: the next poll must ask)."""
        gone = set(ids)
        for backend_id in list(cache.get("jobs", {})):
            if backend_id in gone or backend_id.split("_", 1)[0] in gone:
                del cache["jobs"][backend_id]
