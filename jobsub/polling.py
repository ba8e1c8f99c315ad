"""State polling shared by every Job handle of a backend, and the waiting loop.

One ``StatePoller`` per backend instance: whichever handle asks first after
the poll interval triggers ONE ``backend.states(all live ids)`` call, and
every other handle reads the cached answer.  Final states are kept and never
asked again.  When the backend cannot be reached the poller backs off
(doubling the interval up to a minute) instead of hammering it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import BackendError
from .states import JobState, Status

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = ["StatePoller", "poll_interval", "poller_for", "pollers", "sleep_schedule"]

logger = logging.getLogger("jobsub")

_UNKNOWN = Status(JobState.UNKNOWN)


def poll_interval(backend: Backend) -> float:
    """How often ``backend`` may be asked: ``$JOBSUB_POLL_INTERVAL`` (seconds) or its own default.

    Read here and nowhere else.
    """
    env = os.environ.get("JOBSUB_POLL_INTERVAL")
    return float(env) if env else backend.poll_interval_s


class StatePoller:
    """Caches the states of one backend's jobs and refreshes them in one call."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.interval = poll_interval(backend)
        self.calls = 0
        """How many times the backend was asked (tests and benchmarks read it)."""
        # re-entrant: a debug job's worker runs inside refresh() and may wait on another job
        self._lock = threading.RLock()
        self._live: set[str] = set()
        self._cache: dict[str, Status] = {}
        self._last_refresh = float("-inf")
        self._failures = 0

    def track(self, backend_ids: Iterable[str], *, submitted: bool = False) -> None:
        """Follow these jobs from now on; ``submitted``: they were just submitted, so PENDING.

        Seeding a submission's jobs as PENDING keeps a loop of ``submit`` +
        ``job.state`` from asking the backend once per job.
        """
        with self._lock:
            for backend_id in backend_ids:
                if backend_id not in self._cache or not self._cache[backend_id].state.is_final:
                    self._live.add(backend_id)
                if submitted and backend_id not in self._cache:
                    self._cache[backend_id] = Status(JobState.PENDING)

    def follows(self, backend_id: str) -> bool:
        """Whether this poller tracks (or knows the end of) ``backend_id``."""
        with self._lock:
            return backend_id in self._live or backend_id in self._cache

    def refresh(self) -> None:
        """Ask the backend now about every job still followed (one call)."""
        with self._lock:
            self._refresh_locked()

    def cached(self, backend_id: str) -> Status | None:
        """The last known status, without asking the backend."""
        with self._lock:
            return self._cache.get(backend_id)

    def status(self, backend_id: str, *, force: bool = False) -> Status:
        """The cached status, refreshed first if the interval has passed, ``force``, or never asked.

        A job nobody asked about yet (a handle re-attached from another
        process, a CLI listing) gets a real answer at once rather than
        UNKNOWN until the next interval; the refresh covers every tracked
        job, so handles made together still cost one call.
        """
        with self._lock:
            cached = self._cache.get(backend_id)
            if cached is not None and cached.state.is_final:
                return cached
            self._live.add(backend_id)
            wait = self.interval * (2 ** min(self._failures, 6))
            never_asked = cached is None and self._failures == 0
            if force or never_asked or time.monotonic() - self._last_refresh >= min(wait, 60.0):
                self._refresh_locked()
            return self._cache.get(backend_id, _UNKNOWN)

    def _refresh_locked(self) -> None:
        ids = sorted(self._live)
        self._last_refresh = time.monotonic()
        if not ids:
            return
        self.calls += 1
        try:
            answer = self.backend.states(ids)
        except BackendError as exc:
            self._failures += 1
            logger.warning("could not ask %s for job states (%s); retrying later", self.backend.name, exc)
            return
        self._failures = 0
        for backend_id, status in answer.items():
            self._cache[backend_id] = status
            if status.state.is_final:
                self._live.discard(backend_id)


_pollers_lock = threading.Lock()


def poller_for(backend: Backend) -> StatePoller:
    """The poller of a backend instance (backend instances are shared, see ``get_backend``)."""
    with _pollers_lock:
        poller: StatePoller | None = backend.__dict__.get("_poller")
        if poller is None:
            poller = StatePoller(backend)
            backend.__dict__["_poller"] = poller
        return poller


def pollers() -> list[StatePoller]:
    """The pollers of this process's backend instances (those that ever polled)."""
    from .backends import base

    with base._instances_lock:
        backends = list({id(b): b for b in base._instances.values()}.values())
    return [poller_for(b) for b in backends if "_poller" in b.__dict__]


def sleep_schedule(first: float = 0.002, factor: float = 1.5, cap: float = 1.0) -> Iterable[float]:
    """Sleep lengths for a wait: short at first (fast jobs), then growing to ``cap``."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * factor)


class _CallbackWatcher:
    """One daemon thread per process runs ``add_done_callback`` callbacks."""

    def __init__(self) -> None:
        self._items: list[tuple[Any, Callable[[Any], object]]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, job: Any, fn: Callable[[Any], object]) -> None:
        with self._lock:
            self._items.append((job, fn))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="jobsub-callbacks", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        for delay in sleep_schedule(first=0.01, cap=1.0):
            with self._lock:
                items = list(self._items)
            if not items:
                with self._lock:
                    if not self._items:
                        self._thread = None
                        return
            for job, fn in items:
                try:
                    finished = job.done()
                except Exception:  # report, don't die: other callbacks still need this thread
                    logger.exception("checking job %s for its callback failed", job)
                    finished = True
                if finished:
                    with self._lock:
                        self._items.remove((job, fn))
                    _call(fn, job)
            time.sleep(delay)


def _call(fn: Callable[[Any], object], job: Any) -> None:
    try:
        fn(job)
    except Exception:
        logger.exception("done-callback %r of job %s raised", fn, job)


callbacks = _CallbackWatcher()
