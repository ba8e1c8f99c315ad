"""Placeholders for jobs not submitted yet: ``batch()`` blocks and automatic arrays.

::

    ex.update_parameters(auto_array=True)         (the default of backends whose submissions are API calls)
    for x in xs: ex.submit(fn, x)  ─> checked and pickled now (errors raise here), a placeholder returned
                                      ─> grouped by function: the first call starts a window
    window over (auto_array_window_s), the group full, ``job.job_id`` (any use of a placeholder),
    a placeholder passed to another submit, update_parameters, or the interpreter's exit
        ─> ONE array submission (fewer than auto_array_min calls: one submission each)
        ─> each placeholder becomes the real Job

A failed flush (the backend refused) is logged, and raised by the first use
of each placeholder of the group.  A failure no placeholder ever raised fails
the program when the interpreter exits: an error naming it, exit status 1
(a script that never waits on its jobs must not end "successfully" with
nothing submitted).
"""

from __future__ import annotations

import atexit
import contextlib
import heapq
import itertools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .errors import InvalidStateError
from .job import Job

__all__ = ["Coalescer", "DelayedJob"]

logger = logging.getLogger("jobsub")


class DelayedJob(Job[Any]):
    """What ``submit`` returns before the submission exists: inside ``batch()``, or while coalescing.

    It has no attributes of its own (but its cache key), so any use of the Job
    API lands in ``__getattr__``: a coalesced one is sent at once, a ``batch()``
    one raises (the block has not ended).  Submitted, it becomes the real ``Job``.
    """

    _executor: Any

    @property
    def cache_key(self) -> str | None:
        """Known before a coalesced submission exists (asking it sends nothing)."""
        if "_coalesced_cache_key" not in self.__dict__:  # inside batch(): as any other use
            return self.__getattr__("cache_key")  # type: ignore[no-any-return]
        key: str | None = self.__dict__["_coalesced_cache_key"]
        return key

    def _promote(self, job: Job[Any]) -> None:
        object.__setattr__(self, "__class__", type(job))
        self.__dict__.update(job.__dict__)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        group: _Group | None = self.__dict__.get("_group")
        if group is not None:
            group.flush()
            if group.error is not None:
                _unraised.discard(group)  # told to the caller: the program decides what it means
                raise InvalidStateError(
                    f"this job was never submitted: its coalesced array submission failed: {group.error}"
                ) from group.error
            return getattr(self, name)
        executor = object.__getattribute__(self, "_executor")
        if executor._allow_implicit and executor._batch is not None:
            pending = executor._batch
            executor._batch = []
            executor._flush(pending)
            return getattr(self, name)
        raise InvalidStateError(
            f"job.{name.lstrip('_')} is not available inside 'with executor.batch():': jobs are submitted "
            "when the block ends; keep the handles and use them after it"
        )

    def __del__(self) -> None:
        pass

    def __repr__(self) -> str:
        if self.__dict__.get("_group") is not None:
            return "Job<not submitted yet: coalescing into an array (auto_array)>"
        return "Job<not submitted yet: inside 'with executor.batch():'>"


Submit = Callable[[list[Any], bool], list[Job[Any]]]
"""``submit(items, array)``: what a flush calls with the group's items."""


class _Group:
    """Calls of one function waiting to go out together."""

    def __init__(self, owner: Coalescer, key: Any, deadline: float, min_size: int, cap: int) -> None:
        self.owner, self.key, self.deadline, self.min_size, self.cap = owner, key, deadline, min_size, cap
        self.items: list[tuple[DelayedJob, Any]] = []
        self.cached: dict[str, DelayedJob] = {}  # cache key -> its placeholder: a call repeated in the window
        self.open = True
        self.done = threading.Event()
        self.error: BaseException | None = None

    def flush(self) -> None:
        """Submit the group (once); another thread asking meanwhile waits for that submission."""
        with self.owner.lock:
            mine, self.open = self.open, False
            if mine and self.owner.groups.get(self.key) is self:
                del self.owner.groups[self.key]
        if not mine:
            self.done.wait()
            return
        try:
            placeholders = [p for p, _ in self.items]
            payloads = [item for _, item in self.items]
            if len(payloads) >= self.min_size:
                jobs = self.owner.submit(payloads, True)
            else:
                jobs = [job for item in payloads for job in self.owner.submit([item], False)]
            for placeholder, job in zip(placeholders, jobs):
                placeholder._promote(job)
            logger.debug("auto_array: %d calls sent as %s", len(jobs), "one array" if len(jobs) >= self.min_size else "separate jobs")
        except BaseException as exc:
            self.error = exc
            _unraised.add(self)
            logger.error("auto_array: submitting %d coalesced calls failed: %s", len(self.items), exc)
        finally:
            self.done.set()


class Coalescer:
    """The open groups of one executor; a process-wide timer flushes each at its deadline."""

    def __init__(self, submit: Submit) -> None:
        self.submit = submit
        self.lock = threading.Lock()
        self.groups: dict[Any, _Group] = {}
        _live.add(self)

    def add(self, key: Any, item: Any, *, window_s: float, min_size: int, cap: int, cache_key: str | None) -> DelayedJob:
        """Queue ``item`` in the group ``key``; the returned placeholder becomes its Job.

        A cached call (``cache_key``) already waiting in the group is not queued twice: its
        placeholder is returned again, as the cache returns a job already submitted.
        """
        placeholder: DelayedJob = DelayedJob.__new__(DelayedJob)
        placeholder.__dict__["_group"] = None
        placeholder.__dict__["_coalesced_cache_key"] = cache_key
        full = None
        with self.lock:
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = _Group(self, key, time.monotonic() + window_s, min_size, cap)
                _timer.schedule(group)
            if cache_key is not None and cache_key in group.cached:
                return group.cached[cache_key]
            if cache_key is not None:
                group.cached[cache_key] = placeholder
            placeholder.__dict__["_group"] = group
            group.items.append((placeholder, item))
            if len(group.items) >= cap:
                full = group
        if full is not None:
            full.flush()
        return placeholder

    def flush_all(self) -> None:
        with self.lock:
            groups = list(self.groups.values())
        for group in groups:
            group.flush()


class _Timer:
    """One daemon thread flushes every group of the process when its window ends."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Group]] = []
        self._cond = threading.Condition()
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, group: _Group) -> None:
        with self._cond:
            heapq.heappush(self._heap, (group.deadline, next(self._count), group))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="jobsub-auto-array", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    if not self._cond.wait(timeout=30):
                        self._thread = None
                        return
                deadline, _, group = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(timeout=delay)
                    continue
                heapq.heappop(self._heap)
            if group.open:
                group.flush()  # errors are kept on the group: the thread goes on


_live: weakref.WeakSet[Coalescer] = weakref.WeakSet()
_timer = _Timer()
_unraised: set[_Group] = set()
"""Groups whose submission failed and whose placeholders never raised it (no one looked)."""
FAILED_SUBMISSION_EXIT_STATUS = 1


@atexit.register
def _flush_at_exit() -> None:
    """Calls still coalescing when the interpreter exits are submitted, not lost; a submission that
    failed unseen fails the program (exit status 1), since nothing it asked for will run.

    An exception in an exit handler does not change Python's exit status, so the handler ends the
    process itself, once logging and the standard streams are flushed.
    """
    for coalescer in list(_live):
        coalescer.flush_all()
    failed = sorted(_unraised, key=lambda group: group.deadline)
    if not failed:
        return
    calls = sum(len(group.items) for group in failed)
    logger.critical(
        "auto_array: %d call(s) were never submitted and nothing asked for their jobs: %s; "
        "exiting with status %d", calls, "; ".join(str(group.error) for group in failed), FAILED_SUBMISSION_EXIT_STATUS,
    )
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(FAILED_SUBMISSION_EXIT_STATUS)
