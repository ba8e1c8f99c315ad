"""The states of many cloud jobs at O(arrays) cost: written once, composed by every scheduler backend.

A cloud scheduler runs a ``map_array`` as ONE native array (an AWS Batch
array job, a GCP Batch task group, a Kubernetes Indexed Job) whose parent it
describes in one call, with counts of its children by state.  jobsub's ids
are ``<parent>_<i>``.  ``ArrayTracker`` answers ``Backend.states(ids)`` from
what the backend's ``Scheduler`` (a small object of the backend's own) can
answer, and holds what every backend would otherwise copy::

    Backend.states(["P_0", "P_1", ..., "Q"])
      └─ ArrayTracker.states
           ├─ ids of a run attached (debug=True, "here-..."): their folder answers
           ├─ tasks this process cancelled alone (CancelledAlone): CANCELLED, no call
           ├─ ids grouped by parent: {"P": [0, 1, ...], "Q": [None]}
           ├─ Scheduler.describe(parents)       ≤ describe_max parents a call (chunked here)
           │     └─> {parent id: Parent(native, array, counts by JobState, final, queued, cancelled)}
           ├─ plain job ─────────> Scheduler.status(native, parent)              (its failure table)
           ├─ array ─────────────> its counts; children are listed only when the counts moved:
           │     Scheduler.children(parent, {FAILED})    to explain failures (each child's status)
           │     Scheduler.children(parent, {RUNNING})   to tell running from waiting ones
           │     (both in ONE call when both are due: a backend that lists them together says so)
           ├─ parent not returned ──> ForgottenJobs: the folder decides
           │     result -> COMPLETED, a recorded end (a cancel, a backend's) -> its state and
           │     reason, none -> LOST (after a grace period from the submission)
           └─ parent queued (nothing started) ──> PendingTooLong: past the submission's limit
                 (a parameter recorded in the folder), its end recorded in the folder
                 (ForgottenJobs.record_end), Scheduler.cancel(parent, reason) and CANCELLED,
                 with the scheduler's own reason for the wait

A success needs no listing: the worker writes the task's result to the folder
before its container ends, and ``Job`` reads results first; a child neither
listed FAILED nor RUNNING is PENDING while its array lives and COMPLETED once
the array ended.  Polling a running 10,000-task array costs one describe,
plus listings only when its counts moved.

``cancel`` ends what the scheduler can end; on one that cancels whole arrays
only (GCP Batch), a task cancelled alone is left to its worker, which finds
the cancel recorded in the folder (``Job.record_cancel``) and neither starts
it nor publishes its result.

The rules ``ForgottenJobs``, ``CancelledAlone`` and ``PendingTooLong`` stand alone too: a
scheduler whose answers do not come in parents and counts (Slurm's squeue
and sacct) composes them without the tracker.  Throttling and retries are
not this module's: the backend's ``Gateway`` paces and retries every call
the ``Scheduler`` makes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import JobsubError
from ..folder import JobFolder, Submission, lookup_id
from ..states import JobState, Status
from ..storage import Storage
from .attached import attached_states, is_attached

__all__ = ["ArrayTracker", "CancelledAlone", "ForgottenJobs", "Parent", "PendingTooLong", "Scheduler", "split_id"]

logger = logging.getLogger("jobsub.cloud")

Member = tuple[str, "int | None"]
"""A jobsub id and its index in its parent (None: the parent itself, a plain job or a whole array)."""


def split_id(backend_id: str) -> tuple[str, int | None]:
    """``"P_3"`` -> ``("P", 3)``; ``"P"`` -> ``("P", None)``."""
    parent, sep, index = backend_id.rpartition("_")
    return (parent, int(index)) if sep and index.isdigit() else (backend_id, None)


RUNNING_PAGES_MAX = 2
"""Pages of running children an array's poll may list to tell running from waiting ones: with
the parent's description, a poll of a busy array costs at most three calls while nothing failed."""


@dataclass(frozen=True)
class Parent:
    """What a scheduler says about one parent job, in jobsub's terms.

    Attributes:
        id: the parent's id (jobsub's, without a task index).
        native: the scheduler's own description, handed back to ``Scheduler.status`` and
            ``Scheduler.children`` (the tracker never looks inside).
        array: its children are counted (``counts``) rather than described one by one.
        counts: an array's children per state: ``PENDING`` (not known to run yet),
            ``RUNNING`` (would be listed as running), ``COMPLETED``, ``FAILED`` (ended in any
            other way).  Missing states count 0.
        size: an array's number of children.
        final: the scheduler will not change it any more (also inferred from the counts).
        queued: the scheduler's reason while nothing of it has started and it waits for
            capacity (``PendingTooLong`` times it); None otherwise (running, or waiting for
            dependencies, which is not stuck).
        cancelled: why jobsub cancelled it, when the scheduler says so (its unfinished children
            are then CANCELLED with this reason); empty otherwise.
    """

    id: str
    native: Any
    array: bool = False
    counts: Mapping[JobState, int] = field(default_factory=dict)
    size: int = 1
    final: bool = False
    queued: str | None = None
    cancelled: str = ""

    def count(self, state: JobState) -> int:
        return int(self.counts.get(state, 0))

    @property
    def ended(self) -> bool:
        """Final, said or counted (AWS never marks an array FAILED: its counts say when all ended)."""
        return self.final or (self.array and self.count(JobState.COMPLETED) + self.count(JobState.FAILED) >= self.size)


class Scheduler(Protocol):
    """What a backend answers about its own jobs (an object of the backend's, calling its gateway)."""

    label: str
    """The scheduler's name in reasons ("AWS Batch")."""
    describe_max: int
    """Parents per ``describe`` call (AWS's DescribeJobs: 100; one GetJob each: 1)."""
    list_page: int
    """Children per call of ``children`` (a page of its listing)."""

    def describe(self, parents: Sequence[str]) -> Mapping[str, Parent]:
        """The parents the scheduler knows (one call); the ones it forgot are absent."""
        ...

    def children(self, parent: Parent, states: Collection[JobState]) -> Mapping[int, Any]:
        """An array's children in ``states`` (``FAILED``, ``RUNNING``): index -> native description."""
        ...

    def status(self, native: Any, parent: Parent) -> Status:
        """A plain job's (or a listed child's) status, from its native description: the failure table."""
        ...

    def cancel(self, parent: Parent, reason: str) -> None:
        """End a job that waited too long (the reason is jobsub's, for the scheduler's records)."""
        ...


class ForgottenJobs:
    """A job the scheduler does not list (yet, or any more): its folder decides.

    Within ``grace_s`` of its submission (or of the first time it was missed, when no folder
    records it) the scheduler may just not list it yet (listings are eventually consistent):
    ``waiting``.  After that, a task whose result is in the folder COMPLETED, one whose end
    the folder records (``JobFolder.recorded_end``: ``Job.cancel``'s, or a backend's written by
    ``record_end`` before it deleted a job it ended) in that state with its reason, any other
    LOST.  A recorded end needs no grace: a Job deleted by another process reads its end at
    once.  Cost: one listing of the folder's exit records per forgotten parent, and one of its
    results once its grace is over (or an end is recorded).

    Args:
        storage: the executor's folder store (called when needed: opened lazily).
        label: the scheduler's name in reasons.
    """

    def __init__(self, storage: Callable[[], Storage], label: str) -> None:
        self.storage = storage
        self.label = label
        self._missed_since: dict[str, float] = {}
        self._records: dict[str, tuple[JobFolder, Submission]] = {}
        self._lock = threading.Lock()

    def record_end(self, parent: str, ends: Status | Mapping[int, Status]) -> None:
        """Record in the folder how the tasks of ``parent`` ended, before a backend deletes (or
        cancels) a job whose end it decided: whatever process asks next reads that, not LOST.

        ``ends``: one status for every task of the submission, or task index -> status.  A task
        whose result is written keeps it (one listing); the first exit record of a task wins.  A
        folder that cannot be found or written is logged: the job still ends (this process
        answers from memory), another process then reads LOST.
        """
        try:
            folder, record = self._known(parent)
            if folder is None or record is None:
                logger.warning("%s job %s ends unrecorded: no folder in %s records it", self.label, parent, self.storage().url)
                return
            tasks = dict.fromkeys(range(record.count), ends) if isinstance(ends, Status) else ends
            done = folder.tasks_with_result()
            for index, status in tasks.items():
                if record.offset + index not in done:
                    folder.write_exit(record.offset + index, status.state.value, status.reason)
        except (OSError, JobsubError) as exc:
            logger.warning("%s job %s ends unrecorded: %s", self.label, parent, exc)

    def recorded_cancel(self, parent: str) -> str | None:
        """Why jobsub cancelled ``parent``, as its folder records it (its first task's record):
        the reason another process gave (waited too long, cancelled by the user), which a
        scheduler that keeps none (GCP Batch) cannot tell.  One read; None when not recorded."""
        try:
            folder, record = self._known(parent)
            if folder is None or record is None:
                return None
            return folder.cancel_reason(record.offset)
        except (OSError, JobsubError):
            logger.debug("no cancel record of %s read", parent, exc_info=True)
            return None

    def _known(self, parent: str) -> tuple[JobFolder | None, Submission | None]:
        with self._lock:
            known = self._records.get(parent)
        return known if known is not None else self._record(self.storage(), parent)

    def _record(self, storage: Storage, parent: str) -> tuple[JobFolder | None, Submission | None]:
        """The folder naming ``parent`` and its record of the submission (kept once found)."""
        key = lookup_id(storage, parent)
        folder = JobFolder(storage, key) if key is not None else None
        record = folder.submission(parent) if folder is not None else None
        if folder is not None and record is not None:
            with self._lock:
                self._records[parent] = (folder, record)
        return folder, record

    def judge(
        self,
        parent: str,
        members: Sequence[Member],
        *,
        grace_s: float,
        forgets: str = "it forgets finished jobs after a while",
        waiting: JobState = JobState.PENDING,
        now: float | None = None,
    ) -> dict[str, Status]:
        """Statuses of ``members`` of ``parent``, a job the scheduler did not return.

        ``forgets`` says why the scheduler may have forgotten it (in the LOST reason).
        """
        now = time.time() if now is None else now
        folder, record = self._known(parent)
        with self._lock:
            since = record.submitted_at if record is not None else self._missed_since.setdefault(parent, now)
        if folder is None or record is None:
            if now - since < grace_s:
                return {backend_id: Status(waiting, f"not listed by {self.label} yet") for backend_id, _ in members}
            where = f"no folder in {self.storage().url} names it" if folder is None else f"{folder.url} does not record it"
            why = f"{self.label} does not know job {parent} ({forgets}) and {where}"
            return {backend_id: Status(JobState.LOST, why) for backend_id, _ in members}
        ended = folder.ended()  # one listing: which tasks have an exit record
        waited = now - since >= grace_s
        done = folder.tasks_with_result() if waited or ended else set()  # one listing, not one look a task
        answer = {}
        for backend_id, index in members:
            task = record.offset + (index or 0)
            recorded = folder.recorded_end(task) if str(task) in ended else None
            if recorded is None and not waited:
                answer[backend_id] = Status(waiting, f"not listed by {self.label} yet")
            elif task in done:
                answer[backend_id] = Status(
                    JobState.COMPLETED, f"{self.label} no longer lists job {parent}; its result is in the folder"
                )
            elif recorded is not None:
                answer[backend_id] = recorded
            else:
                answer[backend_id] = Status(
                    JobState.LOST, f"{self.label} no longer lists job {parent} ({forgets}) and it left no result in {folder.url}"
                )
        return answer


class CancelledAlone:
    """Tasks of an array cancelled alone on a scheduler that ends whole arrays only.

    GCP Batch cancels whole jobs, and a Kubernetes Indexed Job (on the API servers without
    per-index failure policies) loses every index when it is deleted: cancelling one task must
    not end its siblings.  Such a task's cancel is recorded in its folder (``Job.record_cancel``),
    so its worker does not start it and, if it runs already, does not publish its result (its
    compute goes on until the function returns); this process remembers it, so that its
    backend's ``states`` answers CANCELLED at once, at no cost.  Another process reads it from the
    folder once the scheduler says the task ended (``Job``) or forgot it (``ForgottenJobs``).
    """

    REASON = "cancelled by the user (the other tasks of its array run on)"

    def __init__(self) -> None:
        self._tasks: dict[str, set[int]] = {}
        self._lock = threading.Lock()

    def add(self, parent: str, index: int, size: int) -> bool:
        """Remember task ``index`` of ``parent`` (of ``size`` tasks); True once all of its tasks are
        cancelled (then end the array itself)."""
        with self._lock:
            tasks = self._tasks.setdefault(parent, set())
            tasks.add(index)
            return len(tasks) >= size

    def status(self, backend_id: str) -> Status | None:
        """CANCELLED if this process cancelled task ``backend_id`` alone; None otherwise."""
        if not self._tasks:  # the usual case: nothing cancelled alone
            return None
        parent, index = split_id(backend_id)
        with self._lock:
            alone = index is not None and index in self._tasks.get(parent, ())
        return Status(JobState.CANCELLED, self.REASON) if alone else None


class PendingTooLong:
    """A job queued (nothing started) for longer than its limit: cancelled, with the scheduler's reason.

    Timed from when this process first saw it waiting: a job re-attached from elsewhere gets
    the whole limit again rather than being cut short.  The limit is the backend parameter
    ``parameter`` (minutes; None: no limit): given by the submitting process (``limit``), or
    read from the job's folder for a job of another process.  ``ArrayTracker`` records the
    cancel in the job's folder before it asks the scheduler (``ForgottenJobs.record_end``): once
    the scheduler forgets the job, any process reads CANCELLED with this reason, not LOST.

    Args:
        storage: the executor's folder store.
        label: the scheduler's name in reasons.
        parameter: the backend's parameter holding the limit (``runnable_timeout_min``).
        shown_as: how the user spells it (``aws_batch_runnable_timeout_min``).
        waiting_as: the scheduler's name for the wait (``RUNNABLE``).
    """

    def __init__(
        self, storage: Callable[[], Storage], label: str, parameter: str, shown_as: str, waiting_as: str = "queued"
    ) -> None:
        self._storage = storage
        self.label = label
        self.parameter = parameter
        self.shown_as = shown_as
        self.waiting_as = waiting_as
        self.limits: dict[str, float | None] = {}
        """Job id -> its limit in minutes, as submitted (else read from its folder once)."""
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()

    def limit(self, job_id: str, minutes: float | None) -> None:
        """The limit of a job this process submitted."""
        self.limits[job_id] = minutes

    def check(self, job_id: str, reason: str, now: float | None = None) -> str | None:
        """``job_id`` waits, the scheduler says ``reason``: why to cancel it now, or None."""
        now = time.monotonic() if now is None else now
        with self._lock:
            since = self._since.setdefault(job_id, now)
        limit = self._limit_of(job_id)
        if limit is None or now - since < limit * 60:
            return None
        why = f"{self.waiting_as} for over {limit:g} min ({self.shown_as}), cancelled by jobsub"
        return f"{why}; {self.label} says: {reason[:300]}" if reason else f"{why}; {self.label} gives no reason"

    def started(self, job_id: str) -> None:
        """It no longer waits: its clock stops."""
        with self._lock:
            self._since.pop(job_id, None)

    def _limit_of(self, job_id: str) -> float | None:
        if job_id not in self.limits:  # a job of another process: its folder says
            storage = self._storage()
            key = lookup_id(storage, job_id)
            value = JobFolder(storage, key).parameter(self.parameter) if key else None
            self.limits[job_id] = float(value) if value is not None else None
        return self.limits[job_id]


@dataclass
class _View:
    """What was last listed of one array's children (listed again only when its counts move)."""

    failed_count: int = 0
    failed: dict[int, Status] = field(default_factory=dict)
    running_key: tuple[tuple[str, int], ...] = ()
    running: set[int] = field(default_factory=set)


class ArrayTracker:
    """Answers ``states(ids)`` for one backend instance from its ``Scheduler``, remembering what it listed.

    Args:
        scheduler: what the backend answers (see ``Scheduler``).
        storage: the executor's folder store (for forgotten jobs and recorded limits).
        lost_grace_s: how long a job the scheduler does not list stays PENDING after its submission.
        pending: the "pending too long" rule, if the backend has such a limit.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        storage: Callable[[], Storage],
        *,
        lost_grace_s: float = 120.0,
        pending: PendingTooLong | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.forgotten = ForgottenJobs(storage, scheduler.label)
        self.alone = CancelledAlone()
        self.pending = pending
        self.lost_grace_s = lost_grace_s
        self.arrays: dict[str, bool] = {}
        """Parent id -> submitted as an array (a one-task "array" may be a plain job)."""
        self._views: dict[str, _View] = {}
        self._cancel_reasons: dict[str, str | None] = {}  # parent -> its folder's cancel reason
        self._lock = threading.RLock()

    # -- what a backend calls --------------------------------------------------------------------
    def submitted(self, parent: str, *, array: bool, pending_limit_min: float | None = None) -> None:
        """Remember a submission of this process (no describe needed to map its ids)."""
        self.arrays[parent] = array
        if self.pending is not None:
            self.pending.limit(parent, pending_limit_min)

    def describe(self, parents: Sequence[str]) -> dict[str, Parent]:
        """``Scheduler.describe``, ``describe_max`` parents a call; the parents it forgot are absent."""
        found: dict[str, Parent] = {}
        unique = list(dict.fromkeys(parents))
        step = max(1, self.scheduler.describe_max)
        for start in range(0, len(unique), step):
            for parent_id, parent in self.scheduler.describe(unique[start : start + step]).items():
                found[parent_id] = parent
                self.arrays[parent_id] = parent.array
        return found

    def is_array(self, parent: str) -> bool:
        """Whether ``parent`` runs as an array (described once if this process did not submit it)."""
        if parent not in self.arrays:
            self.describe([parent])
        return self.arrays.get(parent, False)

    def cancel(self, backend_ids: Sequence[str], end: Callable[[str, int | None], None], *, whole_only: bool = False) -> None:
        """``Backend.cancel``: ``end(parent, index)`` for each id (index None: a plain job, or a whole
        array); the ids of a run attached are skipped (it ended before ``submit`` returned).

        ``whole_only``: the scheduler cancels whole arrays only (GCP Batch): a task of an array
        cancelled alone is remembered (``CancelledAlone``; ``states`` answers CANCELLED) and
        ``end(parent, None)`` comes once every task of its array is cancelled.
        """
        for backend_id in backend_ids:
            if not is_attached(backend_id):
                parent, index = split_id(backend_id)
                index = index if index is not None and self.is_array(parent) else None
                if whole_only and index is not None:
                    described = self.describe([parent]).get(parent)
                    if described is None or described.ended or not self.alone.add(parent, index, described.size):
                        continue  # gone, ended, or its siblings run on
                    index = None
                end(parent, index)

    def whole_array(self, job_ids: Sequence[str]) -> str | None:
        """The parent whose children, in order, ``job_ids`` are (all of an array the scheduler
        describes with that size), None otherwise: what a pairwise dependency needs."""
        parents = {split_id(job_id)[0] for job_id in job_ids}
        parent = parents.pop() if len(parents) == 1 else None
        if parent is None or list(job_ids) != [f"{parent}_{i}" for i in range(len(job_ids))]:
            return None
        described = self.describe([parent]).get(parent)
        return parent if described is not None and described.array and described.size == len(job_ids) else None

    def native_id(self, backend_id: str, join: Callable[[str, int], str]) -> str:
        """The scheduler's id of a jobsub id: ``join(parent, index)`` for an array's child, the
        parent's id for a plain job (whose jobsub id may still carry index 0)."""
        parent, index = split_id(backend_id)
        return join(parent, index) if index is not None and self.is_array(parent) else parent

    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        """``Backend.states``; the ids of a submission run attached (``debug=True``) are answered
        by their folder (``jobsub.cloud.attached``), without asking the scheduler."""
        here = [i for i in backend_ids if is_attached(i)]
        answer = attached_states(self.forgotten.storage(), here) if here else {}
        groups: dict[str, list[Member]] = {}
        for backend_id in backend_ids:
            alone = self.alone.status(backend_id)
            if alone is not None:
                answer[backend_id] = alone
            if backend_id in answer:
                continue
            parent_id, index = split_id(backend_id)
            groups.setdefault(parent_id, []).append((backend_id, index))
        with self._lock:
            described = self.describe(list(groups)) if groups else {}
            for parent_id, members in groups.items():
                parent = described.get(parent_id)
                if parent is not None and parent.cancelled:
                    parent = self._cancelled_why(parent)
                if parent is None:
                    answer.update(self.forgotten.judge(parent_id, members, grace_s=self.lost_grace_s))
                elif parent.array:
                    answer.update(
                        (i, _why_waiting(s, parent)) for i, s in self._array_states(parent, members).items()
                    )
                else:
                    status = self._waited_too_long(parent) or self.scheduler.status(parent.native, parent)
                    answer.update((backend_id, _why_waiting(status, parent)) for backend_id, _ in members)
            return answer

    def _cancelled_why(self, parent: Parent) -> Parent:
        """A cancelled parent with jobsub's reason when its folder records one (read once)."""
        if parent.id not in self._cancel_reasons:
            self._cancel_reasons[parent.id] = self.forgotten.recorded_cancel(parent.id)
        why = self._cancel_reasons[parent.id]
        return dataclasses.replace(parent, cancelled=why) if why else parent

    # -- the rules -------------------------------------------------------------------------------
    def _waited_too_long(self, parent: Parent) -> Status | None:
        """CANCELLED (after cancelling it) if ``parent`` has been queued past its limit."""
        if self.pending is None:
            return None
        if parent.queued is None or parent.ended or parent.cancelled:
            self.pending.started(parent.id)
            return None
        reason = self.pending.check(parent.id, parent.queued)
        if reason is None:
            return None
        self.forgotten.record_end(parent.id, Status(JobState.CANCELLED, reason))  # read once it is forgotten
        self.scheduler.cancel(parent, reason)
        logger.warning("%s job %s: %s", self.scheduler.label, parent.id, reason)
        return Status(JobState.CANCELLED, reason)

    def _array_states(self, parent: Parent, members: Sequence[Member]) -> dict[str, Status]:
        view = self._views.setdefault(parent.id, _View())
        ended = parent.ended
        wanted: set[JobState] = set()
        if parent.count(JobState.FAILED) != view.failed_count:
            wanted.add(JobState.FAILED)
        key = tuple(sorted((str(s), n) for s, n in parent.counts.items()))
        both = parent.count(JobState.RUNNING) and parent.count(JobState.PENDING)
        # which children run is worth RUNNING_PAGES_MAX pages a poll, not more: past that (5,000
        # of 10,000 running), each reads RUNNING with the counts as its reason
        unlisted = bool(both) and parent.count(JobState.RUNNING) > RUNNING_PAGES_MAX * self.scheduler.list_page
        if not ended and both and not unlisted and key != view.running_key:
            wanted.add(JobState.RUNNING)
        if wanted:
            listed = {i: self.scheduler.status(c, parent) for i, c in self.scheduler.children(parent, wanted).items()}
            if JobState.FAILED in wanted:
                view.failed = {i: s for i, s in listed.items() if s.state.is_final and s.state is not JobState.COMPLETED}
                view.failed_count = parent.count(JobState.FAILED)
            if JobState.RUNNING in wanted:
                view.running = {i for i, s in listed.items() if s.state is JobState.RUNNING}
                view.running_key = key
        running = view.running if not ended and both and not unlisted else None
        stuck = self._waited_too_long(parent)
        cancelled = parent.cancelled or (stuck.reason if stuck is not None else "")
        return {
            backend_id: _member(parent, index, ended, view.failed, running, cancelled, unlisted=unlisted)
            for backend_id, index in members
        }


def _why_waiting(status: Status, parent: Parent) -> Status:
    """A task pending without a reason of its own gets its queued job's (the scheduler's status
    event: quota, capacity): ``jobsub status`` shows it and a long wait warns with it."""
    if status.state is JobState.PENDING and not status.reason and parent.queued:
        return Status(JobState.PENDING, parent.queued)
    return status


def _member(
    parent: Parent, index: int | None, ended: bool, failed: Mapping[int, Status], running: set[int] | None,
    cancelled: str, *, unlisted: bool = False,
) -> Status:
    """One child's status, from its parent's counts and the children listed (failed, running).

    ``index`` None asks about the whole array; ``unlisted``: too many children run to list
    which (``RUNNING_PAGES_MAX``), so a child not ended reads RUNNING, the counts its reason.
    """
    n_failed = parent.count(JobState.FAILED)
    if index is None:
        if cancelled:
            return Status(JobState.CANCELLED, cancelled)
        if ended:
            return Status(JobState.FAILED, f"{n_failed} tasks failed") if n_failed else Status(JobState.COMPLETED)
        return Status(JobState.RUNNING if parent.count(JobState.RUNNING) else JobState.PENDING)
    if index in failed:
        found = failed[index]
        ended_by_cancel = found.state in (JobState.FAILED, JobState.CANCELLED)
        return Status(JobState.CANCELLED, cancelled) if cancelled and ended_by_cancel else found
    if ended:
        return Status(JobState.COMPLETED)
    if cancelled:
        return Status(JobState.CANCELLED, cancelled)
    if running is not None:
        return Status(JobState.RUNNING if index in running else JobState.PENDING)
    waiting = parent.count(JobState.PENDING)
    if unlisted:
        return Status(JobState.RUNNING, (
            f"one of the {parent.size} tasks of {parent.id}, {parent.count(JobState.RUNNING)} of which run and "
            f"{waiting} wait (which ones is not listed above {RUNNING_PAGES_MAX} pages a poll)"
        ))
    return Status(JobState.RUNNING if parent.count(JobState.RUNNING) and not waiting else JobState.PENDING)
