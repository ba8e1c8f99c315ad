"""What a task's exit code means, written once for every backend.

A backend reads how its task ended in its own words (a process's status, a
container's ``State``, a Batch job's description, a pod's termination) and
keeps only its native codes (GCP Batch's 5000x family, a reason string).
The conventions every backend shares are here::

    76  the worker's: a job it takes as an argument failed   -> CANCELLED  (DependencyError)
    75  the worker's: checkpointed, run me again               -> FAILED when nothing requeues it
    74  the worker's: the job folder could not be written      -> FAILED, saying so
    137 (SIGKILL) in a task with a memory limit                -> OUT_OF_MEMORY, most likely
    no exit code after the whole time limit has elapsed       -> TIMEOUT

Functions only: the supervisor (local, Docker), the attached debug run, the
debug backend and the cloud backends' state tables call them.
"""

from __future__ import annotations

import signal

from ..states import JobState, Status
from ..worker import DEPENDENCY_FAILED_EXIT_CODE, IO_ERROR_EXIT_CODE, REQUEUE_EXIT_CODE

__all__ = ["DEPENDENCY_FAILED", "KILLED_EXIT_CODE", "killed_for_memory", "signal_reason", "timed_out", "worker_exit"]

KILLED_EXIT_CODE = 128 + int(signal.SIGKILL)
"""137: a container's (or a shell's) exit code for a process killed by SIGKILL."""
DEPENDENCY_FAILED = Status(JobState.CANCELLED, "a dependency failed (its result file says which)")
"""A task that exited 76 (any of its ranks): not run, because a job it takes as an argument failed."""


def worker_exit(code: int | None, *, explained: bool = False) -> Status | None:
    """The status the worker's own exit codes (74, 75, 76) stand for; None for any other code.

    ``explained``: the backend has its own words for why (a container that could not reach its
    bucket folder on its network): exit 74 then says the folder could not be reached, not written.
    """
    if code == DEPENDENCY_FAILED_EXIT_CODE:
        return DEPENDENCY_FAILED
    if code == REQUEUE_EXIT_CODE:
        return Status(JobState.FAILED, f"exit code {code}, the requeue code, without a checkpoint: not run again")
    if code == IO_ERROR_EXIT_CODE and explained:
        return Status(JobState.FAILED, f"exit code {code}: the task could not reach its job folder")
    if code == IO_ERROR_EXIT_CODE:
        return Status(JobState.FAILED, f"exit code {code}: the task could not write to its job folder (is the disk full?)")
    return None


def killed_for_memory(code: int | None, memory_limited: bool) -> bool:
    """Exit 137 (SIGKILL) of a task that had a memory limit: the kernel's out-of-memory killer
    sends SIGKILL, and nothing else in a container usually does."""
    return memory_limited and code == KILLED_EXIT_CODE


def timed_out(elapsed_s: float | None, limit_s: float | None, slack_s: float = 1.0) -> bool:
    """Whether a task that ended without an exit code of its own ran for its whole time limit
    (``slack_s``: clocks of the scheduler's records are rounded)."""
    return bool(limit_s) and elapsed_s is not None and elapsed_s >= float(limit_s or 0) - slack_s


def signal_reason(sig: int) -> str:
    """How a task killed by ``sig`` is described (SIGKILL: the out-of-memory killer's signal)."""
    reason = f"killed by {signal.Signals(sig).name}"
    if sig == signal.SIGKILL:
        reason += " (the kernel's out-of-memory killer sends SIGKILL)"
    return reason
