"""Held submissions: jobs whose backend cannot wait for their upstreams, released by any process.

::

    executor.submit(fn, upstream_job)
      plan(): each upstream succeeded already? ─> nothing to wait for
              its backend waits natively (Slurm afterok, a supervisor)? ─> submitted now, with it
              else (another backend, a debug job, a held upstream, one that failed) ─> HELD:
                  the folder is written (call, args, meta.json with "held"), .held/<key> marks it,
                  nothing is given to the backend
    releaser (a daemon thread of each process holding a handle; ``jobsub attach`` in a shell):
        every ~0.5 s, per held folder: its upstreams' states through their normal pollers
          one ended badly ─> the tasks that take it end CANCELLED (DependencyError), never run
          all succeeded, or submitted to a backend that waits for them natively
              ─> claim held/<g>.json (created once: one process releases) ─> submission.start()
    job.cancel() ─> dependents/<key>.json of its folder ─> every task waiting on it ends CANCELLED
                    (DependencyError), and their dependents after them

Everything a release needs is in the folder, so a held submission outlives
the process that made it: the next ``Job(...)``, ``Job.attach`` or ``jobsub
attach`` of it releases it.  Nothing waits inside a task that is billed.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from .backends.base import Backend, get_backend
from .errors import JobError, JobsubError
from .folder import JobFolder, held_keys, mark_held, unmark_held
from .job import Job, drive_held_with
from .polling import poller_for, sleep_schedule
from .states import JobState
from .storage import open_storage
from .submission import link_logs, params_from_meta, reconcile, start, task_id
from .unstarted import dependency_error, end_hold_if_over, end_unstarted, summary

__all__ = ["check", "drive", "hold", "plan", "record", "released_here", "watch", "watch_dependents", "watch_root"]

logger = logging.getLogger("jobsub")

STALE_CLAIM_S = 300.0
"""A release claim this old with nothing submitted is taken over: its process died in between.
Long, because a backend that retries a submission (Slurm's backoff) may take minutes."""
_MIN_CHECK_S = 0.1


def plan(
    backend: Backend, upstream: Sequence[Job[Any]], per_task: Sequence[Sequence[Job[Any]]] = ()
) -> tuple[list[str], list[Job[Any]]]:
    """Where a submission taking ``upstream`` as arguments waits.

    Returns the backend ids it waits on natively (Slurm's ``afterok``) and the
    upstream jobs that hold it in the client (none: it is submitted now).
    ``per_task``: each task's upstreams, for an array whose task i takes task i
    of one array (AWS Batch waits for that pairwise: ``N_TO_N``).
    """
    pairwise = _pairwise(backend, per_task)
    if pairwise is not None:
        return [pairwise], []
    ids: set[str] = set()
    holding: list[Job[Any]] = []
    for job in upstream:
        if job.is_held(force=True):
            holding.append(job)
        elif job.results_present():
            # ended already: nothing to wait for if it succeeded; if not, hold, and its dependents end at once
            if job.state_from_results() is not JobState.COMPLETED:
                holding.append(job)
        elif backend.waits_natively(job.backend_instance, job.job_id):
            ids.add(job.job_id)
        else:
            holding.append(job)
    limit = backend.max_native_dependencies
    if limit is not None and len(ids) > limit:  # more than the scheduler takes: jobsub holds it
        holding += [job for job in upstream if job.job_id in ids]
        ids.clear()
    return sorted(ids), holding


def _pairwise(backend: Backend, per_task: Sequence[Sequence[Job[Any]]]) -> str | None:
    """The backend's one dependency for "task i waits for the i-th task of one running array", if any."""
    if len(per_task) < 2 or any(len(jobs) != 1 for jobs in per_task):
        return None
    jobs = [each[0] for each in per_task]
    owners = {id(job.backend_instance) for job in jobs}
    if len(owners) != 1 or any(job.is_held() or job.results_present() for job in jobs):
        return None
    return backend.waits_for_array(jobs[0].backend_instance, [job.job_id for job in jobs])


def record(upstream: Sequence[Job[Any]], origin: dict[str, Any]) -> dict[str, Any]:
    """The ``held`` entry of ``meta.json``: the jobs that hold it (the reason names them; the
    releaser looks at every job in ``waits_for``), and what a release needs."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for job in upstream:
        seen.setdefault((job.folder.url, job.index), {
            "url": job.folder.url, "index": job.index, "job_id": job.job_id,
            "backend": job.backend, "backend_config": job.backend_instance.config(),
        })
    return {"upstreams": list(seen.values()), "since": time.time(), "origin": origin}


def hold(folder: JobFolder, meta: dict[str, Any]) -> None:
    """Record the written folder as held and start releasing it from this process."""
    folder.write_meta(meta)
    mark_held(folder.storage, folder.key)
    names = ", ".join(up["job_id"] for up in meta["held"]["upstreams"])
    logger.info("submission %s is held until %s succeed(s)", folder.key, names)
    watch(folder)


# -- releasing -----------------------------------------------------------------------------------------
class _Releaser:
    """One daemon thread per process looks at every held folder this process knows."""

    def __init__(self) -> None:
        self._folders: dict[str, JobFolder] = {}
        self._upstreams: dict[tuple[str, int], Job[Any]] = {}
        self._checked: dict[str, float] = {}
        self._checking: set[str] = set()
        self._lock = threading.Lock()  # guards the dicts only: nothing slow is done under it
        self._checked_one = threading.Condition(self._lock)  # a check ended (a forced one waits for it)
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def watch(self, folder: JobFolder) -> None:
        with self._lock:
            self._folders.setdefault(folder.url, folder)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="jobsub-releaser", daemon=True)
                self._thread.start()
        self._wake.set()

    def pending(self) -> list[str]:
        with self._lock:
            return sorted(self._folders)

    def _run(self) -> None:
        schedule = iter(sleep_schedule(first=0.05, cap=0.5))
        while True:
            with self._lock:
                folders = list(self._folders.values())
                if not folders:
                    self._thread = None
                    return
            for folder in folders:
                try:
                    finished = self.check(folder)
                except Exception:  # report, don't die: the other held submissions need this thread
                    logger.exception("checking the held submission %s failed", folder.url)
                    finished = False
                if finished:
                    with self._lock:
                        self._folders.pop(folder.url, None)
            if self._wake.wait(next(schedule)):
                self._wake.clear()
                schedule = iter(sleep_schedule(first=0.05, cap=0.5))

    def upstream(self, url: str, index: int) -> Job[Any]:
        """One handle per upstream task, kept: its state comes through its backend's shared poller."""
        with self._lock:
            job = self._upstreams.get((url, index))
        if job is None:
            job = Job.at(url, index)
            with self._lock:
                job = self._upstreams.setdefault((url, index), job)
        return job

    def check(self, folder: JobFolder, force: bool = False) -> bool:
        """Look at one held submission; release or end what can be.  True: nothing left to watch.

        One thread of the process looks at a folder at a time; processes are
        kept apart by the claim.  Another thread asking meanwhile returns at
        once, unless ``force``: then it waits for that look to end and looks
        itself (``jobsub attach --once`` would otherwise meet the background
        releaser it started and leave, the submission still held).
        """
        with self._lock:
            if force:
                self._checked_one.wait_for(lambda: folder.url not in self._checking)
            now = time.monotonic()
            too_soon = not force and now - self._checked.get(folder.url, float("-inf")) < _MIN_CHECK_S
            if too_soon or folder.url in self._checking:
                return False
            self._checked[folder.url] = now
            self._checking.add(folder.url)
        try:
            finished = self._check(folder)
        finally:
            with self._lock:
                self._checking.discard(folder.url)
                self._checked_one.notify_all()
        if finished:
            with self._lock:
                self._folders.pop(folder.url, None)
        return finished

    def _check(self, folder: JobFolder) -> bool:
        try:
            meta = folder.read_meta()
        except FileNotFoundError:
            unmark_held(folder.storage, folder.key)
            return True
        if meta.get("submissions") or not meta.get("held"):
            return True
        if meta.get("intents") and not self._resume(folder, meta):
            return bool(meta.get("submissions"))
        count, ranks = int(meta["count"]), int(meta["ranks"])
        ended = folder.ended()
        verdicts: dict[tuple[str, int], tuple[str, str]] = {}
        waiting = False
        backend = get_backend(meta["backend"], meta["backend_config"])
        waits_for = folder.waits_for(meta)
        for i in range(count):
            if str(i) in ended:
                continue
            for url, index, _ranks in waits_for.get(i, []):
                if (url, index) not in verdicts:
                    verdicts[(url, index)] = self._verdict(self.upstream(url, index), backend)
                verdict, why = verdicts[(url, index)]
                if verdict == "failed":
                    name = self.upstream(url, index).job_id
                    end_unstarted(folder, i, ranks, dependency_error(name, why))
                    logger.info("task %d of held %s will not run: job %s %s", i, folder.key, name, why)
                    ended.add(str(i))
                    break
                waiting = waiting or verdict == "wait"
        if len(ended) >= count:
            unmark_held(folder.storage, folder.key)
            return True
        native = sum(1 for verdict, _ in verdicts.values() if verdict == "native")
        limit = backend.max_native_dependencies
        if waiting or (limit is not None and native > limit):  # more than the scheduler takes: wait here
            return False
        return self._release(folder, meta, backend, verdicts)

    def _verdict(self, job: Job[Any], downstream: Backend) -> tuple[str, str]:
        """``ok`` (succeeded), ``native`` (submitted; the downstream's backend waits for it), ``wait``, or ``failed``."""
        if job.is_held() and not job.results_present():
            return "wait", ""
        if job.results_present() or job.status().state.is_final:
            if not job.done_now():
                return "wait", ""  # ended, its result may still be on its way (a shared file system)
            error = job.error_now()
            return ("ok", "") if error is None else ("failed", summary(error))
        return ("native", "") if downstream.waits_natively(job.backend_instance, job.job_id) else ("wait", "")

    def _resume(self, folder: JobFolder, meta: dict[str, Any]) -> bool:
        """A release that recorded its intent and never its answer: found at the backend, or stale?

        Returns True when it is to be released again (its claim is stale and
        the backend never saw it); ``meta`` holds its submissions if found.
        """
        backend = get_backend(meta["backend"], meta["backend_config"])
        reconcile(folder, meta, backend)
        if meta.get("submissions"):
            self._after_release(folder, meta, backend)
            return False
        claims = folder.release_claims()
        if claims and time.time() - float(claims[-1][1].get("at", 0)) < STALE_CLAIM_S:
            return False  # its releaser may still be submitting it
        del meta["intents"]
        return True

    def _release(
        self, folder: JobFolder, meta: dict[str, Any], backend: Backend, verdicts: dict[tuple[str, int], tuple[str, str]]
    ) -> bool:
        if not _claim(folder):
            return False  # another process releases it: its record will say so
        native = sorted({self.upstream(url, i).job_id for (url, i), (v, _) in verdicts.items() if v == "native"})
        held = meta["held"]
        try:
            params = params_from_meta(backend, meta, native)
            meta = start(backend, folder, params, meta, origin=held.get("origin"))
        except (JobsubError, OSError) as exc:
            logger.error("the held submission %s could not be submitted: %s", folder.url, exc)
            error = JobError(
                f"it was held, then its backend refused it: {exc}", state=JobState.FAILED,
                reason=f"submission refused: {exc}",
            )
            for i in range(int(meta["count"])):
                end_unstarted(folder, i, int(meta["ranks"]), error)
            unmark_held(folder.storage, folder.key)
            return True
        self._after_release(folder, meta, backend)
        logger.info("released held submission %s as %s", folder.key, ", ".join(s["id"] for s in meta["submissions"]))
        return True

    def _after_release(self, folder: JobFolder, meta: dict[str, Any], backend: Backend) -> None:
        unmark_held(folder.storage, folder.key)
        ids = [task_id(meta, i) for i in range(int(meta["count"]))]
        poller_for(backend).track([i for i in ids if i is not None], submitted=True)
        origin = meta["held"].get("origin", {})
        link_logs(folder, origin.get("template"), meta)
        # tasks that ended while held (cancelled, or an upstream failed): the backend must not run them
        doomed = [ids[int(name)] for name in folder.ended() if name.isdigit() and int(name) < len(ids)]
        if doomed:
            with contextlib.suppress(JobsubError):
                backend.cancel([i for i in doomed if i is not None])


def _claim(folder: JobFolder) -> bool:
    """Become the one process that releases ``folder`` (a created-once claim, per generation)."""
    claims = folder.release_claims()
    generation = 0
    if claims:
        last, claim = claims[-1]
        if time.time() - float(claim.get("at", 0)) < STALE_CLAIM_S:
            return False
        generation = last + 1  # the claimant died before it recorded an intent
    return folder.claim_release(generation, {**_this_process(), "at": time.time()})


def _this_process() -> dict[str, Any]:
    """Who a release claim names: what ``released_here`` compares with."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


_releaser = _Releaser()


def watch(folder: JobFolder) -> None:
    """Release (or end) the held submission at ``folder`` from this process, in the background."""
    _releaser.watch(folder)


def check(folder: JobFolder) -> bool:
    """Look at a held submission now, in this thread; True when it is no longer held."""
    return _releaser.check(folder, force=True)


def released_here(folder: JobFolder) -> bool:
    """Whether this process holds the last release claim of ``folder`` (it submitted it, not another)."""
    claims = folder.release_claims()
    if not claims:
        return False
    claim = claims[-1][1]
    return all(claim.get(name) == value for name, value in _this_process().items())


def drive(folder: JobFolder) -> None:
    """Someone waits on a held job: its debug upstreams run now (they run when waited for); look now."""
    try:
        held = folder.read_meta().get("held") or {}
    except FileNotFoundError:
        return
    for up in held.get("upstreams", []):
        job = _releaser.upstream(up["url"], up["index"])
        job.backend_instance.on_wait(job.job_id)
    _releaser.check(folder)


def watch_root(root: str) -> list[JobFolder]:
    """Watch every submission marked held under the executor folder ``root``; return them."""
    storage = open_storage(root)
    folders = [JobFolder(storage, key) for key in held_keys(storage)]
    for folder in folders:
        watch(folder)
    return folders


def watch_dependents(folder: JobFolder) -> None:
    """Watch the held submissions that take jobs of ``folder`` as arguments (found in ``dependents/``)."""
    for rec in folder.dependents():
        down = JobFolder.from_url(rec["url"])
        with contextlib.suppress(FileNotFoundError, JobsubError):
            meta = down.read_meta()
            if meta.get("held") and not meta.get("submissions"):
                watch(down)


_WARNS_IN = os.getpid()
"""The process that loaded this module: a child forked from it that exits normally runs the exit
handlers too, and must not repeat the parent's warning about the parent's submissions."""


def _still_held(url: str) -> bool:
    """Whether the submission at ``url`` is still held now (not released, not every task ended)."""
    folder = JobFolder.from_url(url)
    try:
        meta = folder.read_meta()
        return bool(meta.get("held")) and not meta.get("submissions") and not end_hold_if_over(folder, meta)
    except (FileNotFoundError, JobsubError, OSError):
        return False


@atexit.register
def _warn_at_exit() -> None:
    if os.getpid() != _WARNS_IN:
        return
    left = [url for url in _releaser.pending() if _still_held(url)]
    if left:
        logger.warning(
            "%d held submission(s) are not released yet (%s): they will be when a jobsub process watches "
            "them again (Job.attach, or `jobsub attach FOLDER`)", len(left), ", ".join(left[:5]),
        )


class _Driver:
    """This module as the driver of held handles (``jobsub.job.HeldDriver``)."""

    watch = staticmethod(watch)
    watch_dependents = staticmethod(watch_dependents)
    drive = staticmethod(drive)


drive_held_with(_Driver())
