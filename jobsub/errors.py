"""The one exception tree of jobsub.

Every error jobsub raises is one of these (or a builtin ``TypeError`` /
``FileNotFoundError`` where Python already has the right word)::

    JobsubError
    ├── InvalidParameterError        (also ValueError and NameError, as submitit raised both);
    │                                also an unknown backend or cluster name
    ├── SubmissionError              (also RuntimeError; alias FailedSubmissionError)
    │   ├── PicklingError            the function or an argument cannot be pickled
    │   └── CodePackageTooLargeError the code shipped to containers is over code_max_mb
    ├── BackendError                 the scheduler/engine/API cannot be reached or misbehaves
    │   └── ImageBuildError          ``jobsub image build`` failed (the engine's log in the text)
    ├── InvalidStateError            the handle cannot do that now (e.g. inside ``ex.batch()``)
    ├── CorruptResultError           a job file is damaged, or another user's (never unpickled)
    └── UncompletedJobError          (also RuntimeError) the job ended without a result
        ├── UnreadableResultError    it returned, but its value cannot be unpickled here
        ├── FailedJobError           the function raised; ``__cause__`` is the remote exception
        └── JobError                 the scheduler ended the job; ``.state`` and ``.reason`` say why
            ├── JobTimeoutError      hit its time limit            (state TIMEOUT)
            ├── OutOfMemoryError     killed for memory             (state OUT_OF_MEMORY)
            ├── JobCancelledError    cancelled                     (state CANCELLED)
            │   └── DependencyError  not run: a job it takes as an argument failed, was cancelled or lost
            ├── PreemptedError       preempted and not requeued    (state PREEMPTED)
            ├── NodeFailureError     its node died                 (state NODE_FAIL)
            ├── QuotaError           refused for quota/limits      (state FAILED, reason says)
            └── JobLostError         vanished without a trace      (state LOST)

``error_class_for(state, reason)`` picks the ``JobError`` subclass for a
final state; it lives here, next to the tree, so that ``jobsub.states``
needs nothing from this module and this module nothing from it.

``FailedJobError`` and ``UncompletedJobError`` keep submitit's names and bases,
so ``except submitit.core.utils.FailedJobError`` code keeps working with
``jobsub.core.utils``.  Waiting too long in ``job.result(timeout=...)`` raises
the builtin ``TimeoutError`` (as ``concurrent.futures`` does), which is *not*
``JobTimeoutError`` (the scheduler's time limit).
"""

from __future__ import annotations

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; the worker imports this module and spares typing

if TYPE_CHECKING:
    from typing import Any

    from .states import JobState

__all__ = [
    "BackendError",
    "CodePackageTooLargeError",
    "CorruptResultError",
    "DependencyError",
    "FailedJobError",
    "FailedSubmissionError",
    "ImageBuildError",
    "InvalidParameterError",
    "InvalidStateError",
    "JobCancelledError",
    "JobError",
    "JobLostError",
    "JobTimeoutError",
    "JobsubError",
    "NodeFailureError",
    "OutOfMemoryError",
    "PicklingError",
    "PreemptedError",
    "QuotaError",
    "SubmissionError",
    "UncompletedJobError",
    "UnreadableResultError",
    "error_class_for",
]


class JobsubError(Exception):
    """Base class of every jobsub error."""


class InvalidParameterError(JobsubError, ValueError, NameError):
    """A parameter name is unknown or its value is invalid.

    It is a ``ValueError`` and a ``NameError`` so that code written against
    submitit (which raised ``NameError`` for unknown keys and ``ValueError``
    for bad values) catches it unchanged.
    """


class SubmissionError(JobsubError, RuntimeError):
    """The backend refused the submission; its own message is in the text.

    Nothing is left half-submitted: the job folder of a refused submission is
    removed.
    """


FailedSubmissionError = SubmissionError


class PicklingError(SubmissionError):
    """The function or one of its arguments cannot be pickled (raised by ``submit``)."""


class CodePackageTooLargeError(SubmissionError):
    """The code package for a container backend exceeds its size limit (``code_max_mb``)."""


class BackendError(JobsubError):
    """The backend could not be reached or answered something unexpected."""


class ImageBuildError(BackendError):
    """Building a container image failed; the build's own log is in the message."""


class CorruptResultError(JobsubError):
    """A file of a job folder (a result, ``meta.json``) is truncated, damaged, or not to be trusted.

    It is never unpickled.  ``final``: waiting will not mend it (another
    user's file, a damaged record); otherwise ``Job.result()`` gives it a
    grace period (a write on a slow store may still be arriving), then raises
    ``UncompletedJobError``.
    """

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


class InvalidStateError(JobsubError, RuntimeError):
    """The operation is not possible in the current state (e.g. a job touched inside ``batch()``)."""


class UncompletedJobError(JobsubError, RuntimeError):
    """The job finished without producing a result."""


class UnreadableResultError(UncompletedJobError):
    """The job returned a value that cannot be unpickled in this process.

    A class it holds comes from a module the job's environment had and this
    one lacks: the message names it.  Never a placeholder passed off as the
    result.
    """


class FailedJobError(UncompletedJobError):
    """The submitted function raised an exception.

    The message holds the remote exception type, message and traceback (once:
    with the source lines of code defined in ``__main__`` or a notebook cell).
    ``__cause__`` is the original exception object (when it could be unpickled).
    """


class JobError(UncompletedJobError):
    """The scheduler ended the job before it produced a result.

    Attributes:
        state: the final ``JobState``.
        reason: the backend's own words (e.g. ``"CANCELLED by 0"``).
        job_id: the backend id of the job.
    """

    def __init__(
        self,
        message: str,
        *,
        state: JobState | None = None,
        reason: str = "",
        job_id: str = "",
    ) -> None:
        super().__init__(message)
        self.state = state
        self.reason = reason
        self.job_id = job_id


class JobTimeoutError(JobError):
    """The job hit its time limit (``timeout_min``)."""


class OutOfMemoryError(JobError):
    """The job was killed for using more memory than it asked for (``mem_gb``)."""


class JobCancelledError(JobError):
    """The job was cancelled (by ``job.cancel()``, an admin or the scheduler)."""


class DependencyError(JobCancelledError):
    """The job did not run: a job it takes as an argument failed, was cancelled or was lost.

    Its state is CANCELLED (as Slurm reports a job whose ``afterok`` cannot
    be met) and its message names the upstream job and that job's error.

    Attributes:
        upstream: the id of the upstream job that ended badly.
    """

    def __init__(self, message: str, *, upstream: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.upstream = upstream


class PreemptedError(JobError):
    """The job was preempted and not requeued."""


class NodeFailureError(JobError):
    """The node running the job failed."""


class QuotaError(JobError):
    """The job was refused or killed because of a quota or account limit."""


class JobLostError(JobError):
    """The backend no longer knows the job and it left no result."""


_BY_STATE: dict[str, type[JobError]] = {
    "TIMEOUT": JobTimeoutError,
    "OUT_OF_MEMORY": OutOfMemoryError,
    "CANCELLED": JobCancelledError,
    "PREEMPTED": PreemptedError,
    "NODE_FAIL": NodeFailureError,
    "LOST": JobLostError,
}


def error_class_for(state: str, reason: str = "") -> type[JobError]:
    """The ``JobError`` subclass that reports a job which ended in ``state`` (a ``JobState``)."""
    if state == "FAILED" and "quota" in reason.lower():
        return QuotaError
    return _BY_STATE.get(str(state), JobError)
