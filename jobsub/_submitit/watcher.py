"""submitit's ``Job.watcher``, answered by the shared ``StatePoller`` (no second poll loop).

Tools built on submitit ask the class for states by job id::

    SlurmJob.watcher.update()                       refresh every job this process follows
    job.watcher.get_state(job.job_id, "standard")   "RUNNING", "COMPLETED", ... ("UNKNOWN" if never seen)
    job.watcher.is_done(job.job_id, "force")        asks the scheduler first

``mode`` is submitit's: ``"standard"`` asks the backend when the poll
interval has passed, ``"force"`` asks now, ``"cache"`` never asks.  Through
an instance the watcher answers from that job's backend poller; through the
class it answers from whichever poller of this process follows the id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..polling import StatePoller, poller_for, pollers
from ..states import JobState, Status

if TYPE_CHECKING:
    from ..job import Job

__all__ = ["JobWatcher", "Watcher"]

_MODES = ("standard", "force", "cache")


class Watcher:
    """State look-ups by job id over some pollers: one job's backend, or every backend of the process.

    Bound to a job, it answers for that job as ``job.state`` does (its result
    files count before the scheduler catches up), so a tool never sees a job
    RUNNING whose result ``job.result()`` already returns.
    """

    def __init__(self, poller: StatePoller | None = None, job: Job[Any] | None = None) -> None:
        self._poller = poller
        self._job = job

    def _pollers(self) -> list[StatePoller]:
        return [self._poller] if self._poller is not None else pollers()

    def _poller_of(self, job_id: str) -> StatePoller | None:
        if self._poller is not None:
            return self._poller
        return next((p for p in self._pollers() if p.follows(job_id)), None)

    @property
    def num_calls(self) -> int:
        """How often the backends were asked (submitit's ``num_calls``)."""
        return sum(p.calls for p in self._pollers())

    def register_job(self, job_id: str) -> None:
        """Follow ``job_id`` (only meaningful through a job, whose backend is known)."""
        if self._poller is not None:
            self._poller.track([job_id])

    def update(self) -> None:
        """Ask the backend(s) now for every job followed (one call per backend)."""
        for poller in self._pollers():
            poller.refresh()

    def _status(self, job_id: str, mode: str) -> Status:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, not {mode!r}")
        poller = self._poller_of(job_id)
        if poller is None:
            return Status(JobState.UNKNOWN)
        status = poller.cached(job_id) if mode == "cache" else poller.status(job_id, force=mode == "force")
        status = status or Status(JobState.UNKNOWN)
        if self._job is not None and job_id == self._job.job_id:
            return self._job.seen(status)
        return status

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        """The backend's state of ``job_id``, as a plain string (``"UNKNOWN"`` if never seen)."""
        return self._status(job_id, mode).state.value

    def get_info(self, job_id: str, mode: str = "standard") -> dict[str, str]:
        """``{"JobID", "State", "Reason"}`` as the backend last told them."""
        status = self._status(job_id, mode)
        return {"JobID": job_id, "State": status.state.value, "Reason": status.reason}

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        """True once the backend says the job ended (a job never seen is not done)."""
        return self._status(job_id, mode).state.is_final


class JobWatcher:
    """The ``watcher`` attribute of ``Job``: bound to the job's poller, or to the whole process on the class."""

    def __get__(self, job: Job[Any] | None, owner: type | None = None) -> Watcher:
        if job is None:
            return Watcher()
        return Watcher(poller_for(job.backend_instance), job)
