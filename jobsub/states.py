"""Job states shared by every backend.

Each backend maps its native states onto ``JobState`` with one dict; native
state strings never appear outside the backend module.  The names follow
Slurm's, so ``job.state == "COMPLETED"`` reads as it did with submitit.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["JobState", "Status"]


class JobState(str, enum.Enum):
    """Where a job is in its life.  A ``str`` so it compares equal to its name."""

    PENDING = "PENDING"
    """Accepted, waiting for resources (or waiting in a client-side queue)."""
    QUEUED = "QUEUED"
    """A debug job not run yet: it runs in this process when its result is waited for (submitit's word)."""
    HELD = "HELD"
    """Not given to its backend yet: it waits for the jobs it takes as arguments, which its
    backend cannot wait for itself (the reason names them).  Recorded in its folder and
    released by whichever jobsub process watches it."""
    RUNNING = "RUNNING"
    REQUEUED = "REQUEUED"
    """Put back in the queue (checkpoint/requeue or preemption); it will run again."""
    COMPLETED = "COMPLETED"
    """The scheduler says it ended well; the result file says how the function ended."""
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    PREEMPTED = "PREEMPTED"
    NODE_FAIL = "NODE_FAIL"
    LOST = "LOST"
    """The backend no longer knows the job and no result exists."""
    UNKNOWN = "UNKNOWN"
    """Not asked yet, or the backend could not be reached."""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        """``FAILED``, not ``<JobState.FAILED: 'FAILED'>``: what a notebook or a list of states shows."""
        return self.value

    @property
    def is_final(self) -> bool:
        """True when the job will not change state any more."""
        return self in _FINAL


_FINAL = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.OUT_OF_MEMORY,
        JobState.PREEMPTED,
        JobState.NODE_FAIL,
        JobState.LOST,
    }
)


class Status(NamedTuple):
    """What a backend says about one job: its state and, if any, its reason."""

    state: JobState
    reason: str = ""
