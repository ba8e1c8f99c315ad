"""``Job``: a future for work running elsewhere.

It follows ``concurrent.futures.Future`` (``result``, ``exception``, ``done``,
``cancel``, ``cancelled``, ``running``, ``add_done_callback``, builtin
``TimeoutError``) and submitit's ``Job`` (``job_id``, ``state``, ``results``,
``task``, ``stdout``, ``stderr``, ``paths``, ``awaitable``), without
subclassing ``Future``: remote, polled state cannot honestly fill its
internal conditions.

A job is done when every rank wrote its result file, or when the backend
says it ended (after a short grace for result files on slow shared file
systems).  How it ended is decided here, once, for every backend: the
result file if there is one, else the backend's final state turned into a
``JobError`` subclass with the backend's reason and the stderr tail.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from . import errors
from ._submitit.watcher import JobWatcher
from .backends.base import Backend, get_backend
from .calls import DelayedSubmission, JobRef, Outcome, RemoteTraceback
from .folder import JobFolder, JobPaths, folder_at, lookup_id, split_folder_template
from .polling import callbacks, poller_for, sleep_schedule
from .states import JobState, Status
from .storage import open_storage
from .submission import held_id, reconcile, task_id
from .tracebacks import with_source
from .unstarted import cancel_dependents, cancel_held, summary

__all__ = ["AsyncJobProxy", "HeldDriver", "Job", "drive_held_with", "held_id"]

logger = logging.getLogger("jobsub")

R = TypeVar("R")

RESULT_GRACE_S = float(os.environ.get("JOBSUB_RESULT_GRACE_S", "10"))
"""How long a damaged result file may take to become whole (non-atomic stores)."""
_PROGRESS_EVERY_S = 60.0
PENDING_WARN_S = 300.0
"""Default of ``JOBSUB_PENDING_WARN_S``: how long a wait pends for an unusual reason before it says so."""


def pending_warn_s() -> float:
    """How long a job may pend for a reason its backend does not call usual before a wait warns
    (``JOBSUB_PENDING_WARN_S``, seconds); read when a wait starts."""
    return float(os.environ.get("JOBSUB_PENDING_WARN_S", PENDING_WARN_S))
_HOLD_CHECK_S = 0.25
"""How often a handle of a held job reads its ``meta.json`` again to see whether it was released."""


def _tail(text: str | None, lines: int = 40) -> str:
    if not text:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


class _PendingWatch:
    """One wait's view of why its job pends: pending for reasons the backend does not call usual
    (however their wording changes) for ``warn_s`` is logged once, naming the reason (the wait goes
    on; nothing is cancelled)."""

    def __init__(self, job_id: str, usual: frozenset[str], warn_s: float) -> None:
        self.job_id, self.usual, self.warn_s = job_id, usual, warn_s
        self.since: float | None = None
        self.warned = False

    def see(self, status: Status | None, now: float) -> None:
        reason = status.reason if status is not None and status.state is JobState.PENDING else ""
        if not reason or reason.split(",")[0].strip() in self.usual:
            self.since = None
            return
        if self.since is None:
            self.since = now
        if now - self.since >= self.warn_s and not self.warned:
            self.warned = True
            logger.warning(
                "job %s has been pending for %.0f s: %s (the scheduler's reason); still waiting: "
                "it may never start until that changes (job.cancel() to give up)", self.job_id, now - self.since, reason,
            )


class HeldDriver(Protocol):
    """What a handle of a held job needs of the layer that releases held submissions.

    ``jobsub.hold`` is that layer and registers itself (``drive_held_with``) when it is
    imported: it sits above this module (it judges upstreams through their ``Job``
    handles), so the future never imports it.  Whatever hands out handles loads it
    (``jobsub.Job``, the executor, the cache, graphs, the CLI).
    """

    def watch(self, folder: JobFolder) -> None:
        """Release (or end) the held submission at ``folder`` from this process, in the background."""

    def watch_dependents(self, folder: JobFolder) -> None:
        """Watch the held submissions that take jobs of ``folder`` as arguments."""

    def drive(self, folder: JobFolder) -> None:
        """Someone waits on a held job of ``folder``: run what runs when waited for (debug upstreams), look now."""


_held_driver_registered: HeldDriver | None = None


def drive_held_with(driver: HeldDriver) -> None:
    """Make ``driver`` release the held submissions this process's handles meet (``jobsub.hold`` calls it)."""
    global _held_driver_registered
    _held_driver_registered = driver


def _held_driver() -> HeldDriver:
    if _held_driver_registered is None:
        raise errors.InvalidStateError(
            "this job is held until its upstreams succeed, and nothing in this process releases held "
            "submissions: use jobsub.Job (or any executor), which loads jobsub.hold"
        )
    return _held_driver_registered


class Job(Generic[R]):
    """A handle on a submitted job (one array task, all of its ranks).

    ``Job(folder, job_id)`` re-binds to a job submitted earlier, from any
    process: ``folder`` is the executor's folder (``runs`` or ``runs/%j``) or
    the job's own folder.
    """

    watcher = JobWatcher()
    """submitit's ``Job.watcher`` (``update()``, ``get_state(job_id, mode)``, ``is_done``), over the shared poller."""

    def __init__(self, folder: str | os.PathLike[str], job_id: str, tasks: Sequence[int] = (0,)) -> None:
        root, _template = split_folder_template(folder)
        storage = open_storage(root)
        key = lookup_id(storage, job_id)
        jf = JobFolder(storage, key) if key is not None else folder_at(os.fspath(folder).replace("%j", job_id))
        if key is None and not jf.exists():  # nor is ``folder`` the job's own folder (or its %j link)
            raise FileNotFoundError(f"no job {job_id!r} was submitted with folder {os.fspath(folder)!r}")
        self._bind_from_meta(jf, job_id)

    def _bind_from_meta(self, folder: JobFolder, job_id: str) -> None:
        meta = folder.read_meta()
        backend = get_backend(meta["backend"], meta["backend_config"])
        meta = reconcile(folder, meta, backend)
        index = _index_of(folder, meta, job_id)
        real = task_id(meta, index)
        self._init(
            backend, folder, real or job_id, index, meta["ranks"], held=real is None, cache_key=_cache_key(meta, index)
        )
        if real is None:
            _held_driver().watch(folder)

    @classmethod
    def attach(cls, path: str | os.PathLike[str]) -> list[Job[Any]]:
        """Every job of the submission whose folder (or ``%j`` link) is ``path``.

        A held submission gives held handles, and this process releases it
        when its upstreams succeed (as the submitting process would have).
        """
        folder = folder_at(path)
        meta = folder.read_meta()
        backend = get_backend(meta["backend"], meta["backend_config"])
        meta = reconcile(folder, meta, backend)
        if not meta.get("submissions") and meta.get("held"):
            _held_driver().watch(folder)
            return [
                cls.bind(backend, folder, held_id(folder.key, i, meta["array"]), i, meta["ranks"], held=True,
                            cache_key=_cache_key(meta, i))
                for i in range(int(meta["count"]))
            ]
        jobs: list[Job[Any]] = []
        for sub in meta["submissions"]:
            for local in range(sub["count"]):
                job_id = f"{sub['id']}_{local}" if meta["array"] else sub["id"]
                index = sub["offset"] + local
                jobs.append(cls.bind(backend, folder, job_id, index, meta["ranks"], cache_key=_cache_key(meta, index)))
        if meta.get("held"):
            _held_driver().watch_dependents(folder)
        return jobs

    @classmethod
    def at(cls, folder: JobFolder | str, index: int, cache_key: str | None = None) -> Job[Any]:
        """The handle of task ``index`` of the submission at ``folder`` (held or submitted).

        ``cache_key``: the cache entry that led to it, when its folder does not say (another process's call).
        """
        folder = JobFolder.from_url(folder) if isinstance(folder, str) else folder
        meta = folder.read_meta()
        backend = get_backend(meta["backend"], meta["backend_config"])
        meta = reconcile(folder, meta, backend)
        real = task_id(meta, index)
        job_id = real or held_id(folder.key, index, meta["array"])
        job = cls.bind(
            backend, folder, job_id, index, meta["ranks"], held=real is None, cache_key=cache_key or _cache_key(meta, index)
        )
        if real is None and meta.get("held"):
            _held_driver().watch(folder)
        return job

    @classmethod
    def bind(
        cls, backend: Backend, folder: JobFolder, job_id: str, index: int, ranks: int, rank: int | None = None,
        *, held: bool = False, cache_key: str | None = None,
    ) -> Job[Any]:
        """A handle on task ``index`` of the submission at ``folder``, whose backend id is ``job_id``.

        For the code that makes submissions (the executor, the cache, ``jobsub.hold``): users
        get handles from ``submit`` or ``Job(folder, job_id)``.  ``held``: not given to the
        backend yet (``job_id`` is then ``held_id(...)``).
        """
        job: Job[Any] = cls.__new__(cls)
        job._init(backend, folder, job_id, index, ranks, rank, held=held, cache_key=cache_key)
        return job

    def _init(
        self, backend: Backend, folder: JobFolder, job_id: str, index: int, ranks: int, rank: int | None = None,
        *, held: bool = False, cache_key: str | None = None,
    ) -> None:
        self._backend = backend
        self._folder = folder
        self._job_id = job_id
        self._index = index
        self._ranks = ranks
        self._rank = rank
        self._cache_key = cache_key
        self._held = held
        """Not given to the backend yet (jobsub.hold): ``_job_id`` is the folder's key until it is."""
        self._hold_checked = float("-inf")
        self._held_status = Status(JobState.HELD)
        self._poller = poller_for(backend)
        if not held:  # a held job's id is no backend's: asking would make it LOST
            self._poller.track([job_id])
        self._final_seen: float | None = None
        # how long a result may lag behind a final state: the backend's, unless the user says
        self._result_grace_s = float(os.environ.get("JOBSUB_RESULT_GRACE_S", backend.result_grace_s))
        # how often results are looked for: a listing costs microseconds on a disk, a request on a store
        self._check_s = backend.result_check_s if folder.local_file() is not None else max(1.0, backend.result_check_s)
        self._cancel_at_deletion = False
        self._cancel_seen: str | None = None
        """Why the folder says this task was cancelled ("": not), once the backend said it ended."""

    # -- identity ---------------------------------------------------------------------
    @property
    def job_id(self) -> str:
        """The backend's id of this task (``<array id>_<index>`` for array tasks).

        A held job is named by its folder's key (``held_id``) until it is released.
        """
        if self._held:
            self._released()
        return self._job_id

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def cache_key(self) -> str | None:
        """The key of this call in the executor's cache (``cache=True``), None if it was not cached."""
        return self._cache_key

    @property
    def index(self) -> int:
        """Position of this job in its ``map_array``/``batch`` submission."""
        return self._index

    @property
    def num_tasks(self) -> int:
        """Number of ranks (``tasks_per_node * nodes``); 1 for a rank's own handle."""
        return 1 if self._rank is not None else self._ranks

    @property
    def task_id(self) -> int | None:
        return self._rank if self._rank is not None else (0 if self._ranks == 1 else None)

    @property
    def paths(self) -> JobPaths:
        return self._folder.paths(self._index, self._rank or 0)

    @property
    def folder(self) -> JobFolder:
        return self._folder

    def task(self, task_id: int) -> Job[R]:
        """The handle of one rank of a multi-task job (``tasks_per_node``/``nodes`` > 1)."""
        if not 0 <= task_id < self._ranks:
            raise ValueError(f"task_id {task_id} must be between 0 and {self._ranks - 1}")
        if self._ranks == 1:
            return self
        return Job.bind(self._backend, self._folder, self._job_id, self._index, self._ranks, task_id)

    def submission(self) -> DelayedSubmission:
        """The submitted call (function, args, kwargs), as the worker will see it."""
        from .worker import load_task

        return load_task(self._folder, self._index)[0]

    # -- state ----------------------------------------------------------------------------
    def _status(self, force: bool = False) -> Status:
        if self._held and not self._released(force):
            return self._held_status
        return self._recorded_cancel(self._poller.status(self._job_id, force=force))

    def _recorded_cancel(self, status: Status) -> Status:
        """``status``, or CANCELLED when the backend says the task ended without a result and the
        folder records its cancel.

        A task of an array cancelled alone on a scheduler that ends whole arrays only (GCP
        Batch, Kubernetes), from another process, ends with no result and exit 0 (the worker
        saw the record): its scheduler calls it a success.  Read once per handle, at the first
        final answer without a result.
        """
        if not status.state.is_final or status.state is JobState.CANCELLED:
            return status
        if self._cancel_seen is None:
            try:
                self._cancel_seen = "" if self.results_present() else (self._folder.cancel_reason(self._index) or "")
            except (OSError, errors.JobsubError):  # a folder out of reach: the scheduler's word, asked again later
                return status
        return Status(JobState.CANCELLED, self._cancel_seen) if self._cancel_seen else status

    def _released(self, force: bool = False) -> bool:
        """Whether a held job was given to its backend since (its record says so); rebind it then.

        Asked at most every ``_HOLD_CHECK_S``: one read of ``meta.json``.
        """
        now = time.monotonic()
        if self._held_status.state.is_final or (not force and now - self._hold_checked < _HOLD_CHECK_S):
            return False
        self._hold_checked = now
        try:
            meta = self._folder.read_meta()
        except FileNotFoundError:
            self._held_status = Status(JobState.LOST, f"its job folder {self._folder.url} was deleted")
            return False
        real = task_id(meta, self._index)
        if real is None:
            held = meta.get("held")
            if self.results_present():  # ended while held (cancelled, or an upstream failed)
                self._held_status = Status(self.state_from_results(), "ended before it was submitted")
            elif held:
                names = sorted({up["job_id"] for up in held.get("upstreams", [])})
                self._held_status = Status(JobState.HELD, f"waiting for {', '.join(names)}")
                _held_driver().watch(self._folder)
            else:  # intents without an answer: its client died while submitting (see reconcile)
                self._held_status = Status(JobState.UNKNOWN, "not submitted (yet): its client may have died submitting it")
            return False
        self._job_id, self._held = real, False
        self._poller.track([real])
        logger.debug("held job %s of %s was released as %s", self._folder.key, self._folder.url, real)
        return True

    @property
    def state(self) -> JobState:
        """The backend's state (a ``str`` enum: ``job.state == "RUNNING"`` works)."""
        return self._seen_state(self._status())

    def status(self, force: bool = False) -> Status:
        """The state with the backend's reason: why a job waits (Slurm's pending reason, AWS's
        ``statusReason``, the engine's refusal) or how it ended.  ``force``: ask the backend now."""
        return self.seen(self._status(force))

    def _seen_state(self, status: Status) -> JobState:
        """The backend's state, unless the results already tell more (the backend lags behind them)."""
        if not status.state.is_final and self.results_present():
            return self.state_from_results()
        return status.state

    def done(self, force_check: bool = False) -> bool:
        """True once the job ended (or every rank wrote its result).

        Like ``result()``, it is a wait for the job: a debug job runs now (as submitit's does),
        and a held job looks at its upstreams (a debug upstream runs now).
        """
        if self._held and not self.results_present():
            _held_driver().drive(self._folder)
        self._backend.on_wait(self._job_id)
        return self.done_now(force_check)

    def get_info(self, mode: str = "force") -> dict[str, str]:
        """The backend's view of the job, as submitit's ``get_info()`` (``State``, ``Reason``)."""
        status = self._status(force=mode == "force")
        return {"JobID": self._job_id, "State": self._seen_state(status).value, "Reason": status.reason}

    def running(self) -> bool:
        return self.state is JobState.RUNNING

    def cancelled(self) -> bool:
        return self._status().state is JobState.CANCELLED

    def cancel(self, check: bool = True) -> bool:
        """Ask the backend to cancel the job; False if it had already finished.

        The cancel is recorded in the job folder first, so every process reads CANCELLED,
        whatever the backend (``record_cancel``).  The jobs waiting on it (taking it as an
        argument) are cancelled too, transitively, from any process: they end CANCELLED with
        ``DependencyError``.

        A scheduler that ends whole arrays only (GCP Batch, Kubernetes Indexed Jobs) cannot stop
        one task of an array alone: such a task reads CANCELLED at once, does not start if it has
        not, and publishes no result; but if it is already running, its compute goes on until
        its function returns.
        """
        cancelled: bool
        if self._held and not self._released(force=True):
            cancelled = cancel_held(self._folder, self._index, self._job_id)
        else:
            cancelled = self._cancel_submitted()
        if cancelled:
            cancel_dependents(self._folder, self._index, self._job_id, "was cancelled")
        return cancelled

    def _cancel_submitted(self) -> bool:
        # what is known suffices (asking would run a debug job); a handle that knows nothing
        # yet (another process, the CLI) asks first: no "cancelled" for a job that has ended
        known = self._poller.cached(self._job_id) or self._status()
        if self.results_present() or known.state.is_final:
            return False
        self.record_cancel()
        self._backend.cancel([self._job_id])
        self._status(force=True)
        return True

    def cancel_at_deletion(self, value: bool = True) -> Job[R]:
        """Cancel the job when this handle is garbage collected (submitit's option)."""
        self._cancel_at_deletion = value
        return self

    def __del__(self) -> None:
        if getattr(self, "_cancel_at_deletion", False):
            with contextlib.suppress(Exception):
                self.cancel()

    # -- waiting ----------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> None:
        """Block until the job is done; builtin ``TimeoutError`` after ``timeout`` seconds."""
        start = time.monotonic()
        next_report = start + _PROGRESS_EVERY_S
        # a result file is a cheap check, so look often; the backend itself is asked at most
        # once per poll interval whatever this loop does (the poller caches its answer)
        self._backend.on_wait(self._job_id)
        # from 1 ms, growing by a tenth on a local disk (a check is a stat: a result is seen at most
        # a tenth of its wait late), by a quarter on an object store (a check is a request)
        factor = 1.1 if self._folder.local_file() is not None else 1.25
        pending = _PendingWatch(self._job_id, self._backend.usual_pending_reasons, pending_warn_s())
        for delay in sleep_schedule(first=0.001, factor=factor, cap=min(self._check_s, max(0.05, self._poller.interval))):
            if self.done():
                self._await_end_record()
                return
            now = time.monotonic()
            pending.see(self._poller.cached(self._job_id), now)
            if timeout is not None and now - start >= timeout:
                raise TimeoutError(
                    f"job {self._job_id} not done after {timeout:g} s (state {self.state})"
                )
            if now >= next_report:
                logger.info("still waiting for job %s: %s after %.0f s", self._job_id, self.state, now - start)
                next_report = now + _PROGRESS_EVERY_S
            time.sleep(delay if timeout is None else min(delay, max(0.0, start + timeout - now)))

    def _await_end_record(self) -> None:
        """Wait (at most the backend's ``end_record_lag_s``) for the backend to record the end.

        The local server writes a task's exit record just after its result
        appears: code that removes the folder as soon as ``result()`` returns
        (``with TemporaryDirectory()``) would race that write and fail with
        "Directory not empty".  Skipped when the poller has seen the end
        already, and for backends that write nothing after the result.
        """
        lag = self._backend.end_record_lag_s
        if not lag or self._folder.local_file() is None:
            return
        known = self._poller.cached(self._job_id)
        if known is not None and known.state.is_final:
            return
        deadline = time.monotonic() + lag
        for delay in sleep_schedule(first=0.0002, factor=1.5, cap=0.01):
            if self._backend.end_recorded(self._job_id, self._folder) or time.monotonic() >= deadline:
                return
            time.sleep(delay)

    # -- results --------------------------------------------------------------------------------
    def _outcome(self, rank: int) -> Outcome | None:
        """The rank's outcome, None if not written; a damaged file gets a grace period, then raises."""
        deadline = None
        while True:
            try:
                payload = self._folder.read_result(self._index, rank)
            except errors.CorruptResultError as exc:
                # never unpickle a damaged file; on a non-atomic store it may still be arriving
                deadline = deadline or time.monotonic() + RESULT_GRACE_S
                if not exc.final and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise errors.UncompletedJobError(f"job {self._job_id}: {exc}") from None
            if payload is None:
                return None
            try:
                return Outcome.loads(payload, self._folder.result_url(self._index, rank))
            except errors.UnreadableResultError as exc:
                raise errors.UnreadableResultError(f"{self._where(rank)} finished, but {exc}") from exc.__cause__

    def result(self, timeout: float | None = None) -> R:
        """Wait, then return the function's value (a list with one per rank for multi-task jobs)."""
        try:
            results = self.results(timeout)
        except Exception as exc:  # the caller's traceback ends here, not in jobsub's own frames
            raise exc.with_traceback(None) from exc.__cause__
        return results[0] if len(results) == 1 else results  # type: ignore[return-value]

    def results(self, timeout: float | None = None) -> list[R]:
        """Wait, then return the value of every rank; raise the first failure."""
        self.wait(timeout)
        try:
            return [self._value_or_raise(rank) for rank in self.rank_list]
        except Exception as exc:  # the remote traceback (in its message or cause) says where it failed
            raise exc.with_traceback(None) from exc.__cause__

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait, then return (not raise) the job's error, or None if it succeeded."""
        self.wait(timeout)
        return self.error_now()

    def _value_or_raise(self, rank: int) -> Any:
        outcome = self._outcome(rank)
        if outcome is None:
            raise self._missing_result_error(rank)
        if outcome.ok:
            return outcome.value
        raise self._failure(outcome, rank)

    def _where(self, rank: int) -> str:
        task = f" (task {self._index}, rank {rank})" if self._ranks > 1 else f" (task {self._index})"
        return f"job {self._job_id}{task}"

    def _logs_hint(self, rank: int) -> str:
        where = self._folder.local_file() or self._folder.url
        log = f"{where}/log/{self._index}.{rank}"
        return f"Logs: {log}.err (stderr), {log}.out (stdout)"

    def _failure(self, outcome: Outcome, rank: int) -> BaseException:
        exc = outcome.exception
        if isinstance(exc, errors.JobError):  # raised by the worker itself (e.g. timeout, not checkpointable)
            exc.job_id = self._job_id
            exc.args = (f"{self._where(rank)}: {exc}\n{self._logs_hint(rank)}",)  # which job, where its logs are
            return exc
        remote = with_source(outcome.traceback)  # code from __main__ or a notebook: its lines, not <dynamic-code>
        # the function's own exception, where the backend promises it (its traceback as its cause); never
        # a SystemExit or KeyboardInterrupt: those would end the caller's program, not report the job's end
        if exc is not None and self._backend.capabilities.reraise_original and isinstance(exc, Exception):
            exc.__cause__ = RemoteTraceback(remote)
            return exc
        message = (  # the remote traceback is shown once: here, not also as the cause of the exception
            f"{self._where(rank)} failed with {outcome.exc_type}: {outcome.message}\n"
            f"---------------------- remote traceback ----------------------\n"
            f"{remote.rstrip()}\n"
            f"--------------------------------------------------------------\n"
            f"{self._logs_hint(rank)}"
        )
        failed = errors.FailedJobError(message)
        failed.__cause__ = exc
        return failed

    def _missing_result_error(self, rank: int) -> errors.UncompletedJobError:
        status = self._status(force=True)
        out, err = self._backend.logs(self._job_id, self._folder, self._index, rank)
        tail = _tail(err) or _tail(out)
        reason = f" ({status.reason})" if status.reason else ""
        lines = [f"{self._where(rank)} ended in state {status.state}{reason} without a result."]
        if tail:
            lines += ["Last lines of its output:", "-" * 40, tail, "-" * 40]
        lines.append(self._logs_hint(rank))
        if status.state is JobState.CANCELLED:
            upstream = self._failed_upstream()
            if upstream is not None:  # Slurm cancelled it for its afterok: say which upstream, and why
                up_id, why = upstream
                return errors.DependencyError(
                    f"{self._where(rank)} did not run: a dependency failed: job {up_id} {why}",
                    state=status.state, reason=f"a dependency failed: job {up_id}", job_id=self._job_id, upstream=up_id,
                )
        cls = errors.error_class_for(status.state, status.reason)
        return cls("\n".join(lines), state=status.state, reason=status.reason, job_id=self._job_id)

    def _failed_upstream(self) -> tuple[str, str] | None:
        """(id, what went wrong) of a job this one takes as an argument that ended badly, if one did."""
        try:
            refs = self._folder.waits_for().get(self._index, [])
            for url, index, _ranks in refs:
                upstream = Job.at(url, index)
                if upstream.done_now():
                    error = upstream.error_now()
                    if error is not None:
                        return upstream.job_id, summary(error)
        except (errors.JobsubError, OSError, KeyError, ValueError):
            return None
        return None

    # -- the driver side ------------------------------------------------------------------------------
    # For the code that drives jobs (the executor, jobsub.hold, the cache, graphs, the CLI), as
    # ``Future.set_result`` is for executors: nothing outside this module touches a Job's private
    # members (tests/test_layers.py checks it).  Users need none of these.
    @property
    def backend_instance(self) -> Backend:
        """The backend object the job runs on (``backend`` is its name)."""
        return self._backend

    def record_cancel(self, reason: str = "cancelled by the user") -> None:
        """Record in the folder that this task is cancelled, before its backend is asked to cancel it.

        Its exit record (the first record wins): the worker then neither starts the task nor
        publishes its result, and any process reads CANCELLED, also once the scheduler forgot
        the job (``jobsub.cloud.arrays.ForgottenJobs``).  A backend that records it itself
        (``Backend.records_cancel``: local, Docker) is left to do so.
        """
        if not self._backend.records_cancel:
            self._folder.write_exit(self._index, JobState.CANCELLED.value, reason)

    def is_held(self, force: bool = False) -> bool:
        """Whether the job is still held in its folder (``jobsub.hold``), not given to its backend yet.

        Reads its ``meta.json`` again (at most every 0.25 s, or now with ``force``) to follow a release.
        """
        return self._held and not self._released(force)

    @property
    def rank_list(self) -> list[int]:
        """The ranks this handle covers: all of them, or its own (``task(i)``)."""
        return [self._rank] if self._rank is not None else list(range(self._ranks))

    def results_present(self) -> bool:
        """Whether every rank covered wrote its result (a file check, no scheduler call)."""
        return self._folder.has_results(self._index, self.rank_list, self._check_s)

    def state_from_results(self) -> JobState:
        """COMPLETED, FAILED, or the state the worker gave its own error (a failed dependency: CANCELLED).

        A result that cannot be read here is FAILED: never a success that ``result()`` then denies.
        """
        try:
            outcomes = [self._outcome(r) for r in self.rank_list]
        except errors.JobsubError:
            return JobState.FAILED
        if all(o is not None and o.ok for o in outcomes):
            return JobState.COMPLETED
        states = [getattr(o.exception, "state", None) for o in outcomes if o is not None and not o.ok]
        return next((s for s in states if isinstance(s, JobState)), JobState.FAILED)

    def done_now(self, force_check: bool = False) -> bool:
        """``done()`` without running anything (for whoever watches many jobs: the releaser, graphs)."""
        if self.results_present():
            return True
        status = self._status(force=force_check)
        if not status.state.is_final:
            self._final_seen = None
            return False
        if status.state in (JobState.COMPLETED, JobState.FAILED):
            # the scheduler may see the end before a shared file system shows the result
            now = time.monotonic()
            if self._final_seen is None:
                self._final_seen = now
            return now - self._final_seen >= self._result_grace_s or self.results_present()
        return True

    def error_now(self) -> BaseException | None:
        """The error of a job that is done, None if it succeeded (nothing waited for, nothing run)."""
        for rank in self.rank_list:
            try:
                self._value_or_raise(rank)
            except errors.UncompletedJobError as exc:
                return exc
            except Exception as exc:  # debug backend re-raises the function's own exception
                return exc
        return None

    def seen(self, status: Status) -> Status:
        """``status`` (the backend's word) as this handle reports it: the results tell more when the backend lags."""
        state = self._seen_state(status)
        return status if state is status.state else Status(state)

    # -- logs and usage ---------------------------------------------------------------------------
    def stdout(self) -> str | None:
        """The job's stdout (all ranks, concatenated), None if nothing was written yet."""
        return self._log(0)

    def stderr(self) -> str | None:
        return self._log(1)

    def _log(self, which: int) -> str | None:
        if self._held:  # no backend knows it yet: only what the folder holds
            stream = ("out", "err")[which]
            held = [self._folder.read_log(self._index, rank, stream) for rank in self.rank_list]
            return "".join(t for t in held if t is not None) or None
        texts = [
            self._backend.logs(self._job_id, self._folder, self._index, rank)[which] for rank in self.rank_list
        ]
        present = [t for t in texts if t is not None]
        return "".join(present) if present else None

    @property
    def usage(self) -> list[dict[str, Any]]:
        """Per rank: host, start/end times, elapsed seconds, peak RSS (MB); {} if not finished."""
        usage = []
        for rank in self.rank_list:
            outcome = self._outcome(rank)
            usage.append(dict(outcome.usage) if outcome else {})
        return usage

    # -- callbacks and asyncio -------------------------------------------------------------------
    def add_done_callback(self, fn: Callable[[Job[R]], object]) -> None:
        """Call ``fn(job)`` (in a jobsub thread) once the job is done."""
        if self.done():
            fn(self)
        else:
            callbacks.add(self, fn)

    def awaitable(self) -> AsyncJobProxy[R]:
        """An asyncio view: ``await job.awaitable().result()``."""
        return AsyncJobProxy(self)

    def __await__(self) -> Generator[Any, None, R]:
        return self.awaitable().result().__await__()

    # -- pickling --------------------------------------------------------------------------------
    def ref(self) -> JobRef:
        """What stands for this job where it is an argument of another: its folder, not its scheduler."""
        return JobRef(self._folder.url, self._index, tuple(self.rank_list), self._job_id, self._backend.name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _restore,
            (
                self._backend.name, self._backend.config(), self._folder.url, self._job_id, self._index, self._ranks,
                self._rank, self._held, self._cache_key,
            ),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}<backend={self._backend.name}, job_id={self._job_id}, state={self.state}>"

    def _repr_html_(self) -> str:
        """A notebook's view: the job's summary row, its error's first line and where its logs are."""
        from .display import job_html

        return job_html(self)


def _restore(
    backend_name: str, config: dict[str, Any], url: str, job_id: str, index: int, ranks: int, rank: int | None,
    held: bool = False, cache_key: str | None = None,
) -> Job[Any]:
    backend = get_backend(backend_name, config)
    return Job.bind(backend, JobFolder.from_url(url), job_id, index, ranks, rank, held=held, cache_key=cache_key)


def _index_of(folder: JobFolder, meta: dict[str, Any], job_id: str) -> int:
    """Which task of the submission ``job_id`` names: a backend id, or the held name (``held_id``)."""
    count = int(meta.get("count", 1))
    if job_id == folder.key and not meta["array"]:
        return 0
    if job_id.startswith(folder.key + "_") and meta["array"]:
        suffix = job_id[len(folder.key) + 1 :]
        if suffix.isdigit() and int(suffix) < count:
            return int(suffix)
    for sub in meta.get("submissions", []):
        base = sub["id"]
        if job_id == base and not meta["array"]:
            return 0
        if job_id.startswith(base + "_") and meta["array"]:
            suffix = job_id[len(base) + 1 :]
            if not suffix.isdigit() or int(suffix) >= sub["count"]:
                raise FileNotFoundError(f"{job_id!r}: array {base} has tasks {base}_0 to {base}_{sub['count'] - 1}")
            return int(sub["offset"]) + int(suffix)
    parent = next((sub for sub in meta.get("submissions", []) if sub["id"] == job_id), None)
    if meta["array"] and (parent is not None or job_id == folder.key):
        n = parent["count"] if parent is not None else count
        raise FileNotFoundError(
            f"{job_id!r} is an array of {n} tasks: name one, {job_id}_0 to {job_id}_{n - 1} "
            f"(or use Job.attach({folder.path or folder.url!s}) for all of them)"
        )
    raise FileNotFoundError(f"job {job_id!r} is not part of submission {folder.url}")


def _cache_key(meta: dict[str, Any], index: int) -> str | None:
    key: str | None = meta.get("cache_keys", {}).get(str(index))
    return key


class AsyncJobProxy(Generic[R]):
    """asyncio versions of the blocking methods (polling with ``asyncio.sleep``)."""

    def __init__(self, job: Job[R]) -> None:
        self.job = job

    async def wait(self, poll_interval: float | None = None) -> None:
        import asyncio  # loaded already in a running event loop; `import jobsub` does not pay for it

        self.job._backend.on_wait(self.job.job_id)
        for delay in sleep_schedule(cap=poll_interval or 1.0):
            if self.job.done():
                return
            await asyncio.sleep(delay)

    async def result(self, poll_interval: float | None = None) -> R:
        await self.wait(poll_interval)
        return self.job.result()

    async def results(self, poll_interval: float | None = None) -> list[R]:
        await self.wait(poll_interval)
        return self.job.results()

    def results_as_completed(self, poll_interval: float | None = None) -> Iterator[Awaitable[R]]:
        """Awaitables of each rank's result, in the order they finish (asyncio.as_completed)."""
        import asyncio

        job = self.job
        handles = [job.task(rank) for rank in range(job.num_tasks)] if job.num_tasks > 1 else [job]
        return asyncio.as_completed([AsyncJobProxy(h).result(poll_interval) for h in handles])
