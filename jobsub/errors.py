"""The one exception tree of jobsub.

Every error jobsub raises is one of these (or a builtin ``TypeError`` /
``FileNotFoundError`` where Python already has the right word)::

    JobsubError
    ├── InvalidParameterError        (also ValueError and NameError, as submitit raised both)
    ├── SubmissionError              (also RuntimeError; alias FailedSubmissionError)
    │   └── PicklingError            the function or an argument cannot be pickled
    ├── BackendError                 the scheduler/engine/API cannot be reached or misbehaves
    ├── InvalidStateError            the handle cannot do that now (e.g. inside ``ex.batch()``)
    └── UncompletedJobError          (also RuntimeError) the job ended without a result
        ├── FailedJobError           the function raised; ``__cause__`` is the remote exception
        └── JobError                 the scheduler ended the job; ``.state`` and ``.reason`` say why
            ├── JobTimeoutError      hit its time limit            (state TIMEOUT)
            ├── OutOfMemoryError     killed for memory             (state OUT_OF_MEMORY)
            ├── JobCancelledError    cancelled                     (state CANCELLED)
            ├── PreemptedError       preempted and not requeued    (state PREEMPTED)
            ├── NodeFailureError     its node died                 (state NODE_FAIL)
            ├── QuotaError           refused for quota/limits      (state FAILED, reason says)
            └── JobLostError         vanished without a trace      (state LOST)

``FailedJobError`` and ``UncompletedJobError`` keep submitit's names and bases,
so ``except submitit.core.utils.FailedJobError`` code keeps working with
``jobsub.core.utils``.  Waiting too long in ``job.result(timeout=...)`` raises
the builtin ``TimeoutError`` (as ``concurrent.futures`` does), which is *not*
``JobTimeoutError`` (the scheduler's time limit).
"""

from __future__ import annotations

TYPE_CHECKING = False  # as typing.TYPE_CHECKING; the worker imports this module and spares typing

if TYPE_CHECKING:
    from .states import JobState

__all__ = [
    "BackendError",
    "FailedJobError",
    "FailedSubmissionError",
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


class BackendError(JobsubError):
    """The backend could not be reached or answered something unexpected."""


class InvalidStateError(JobsubError, RuntimeError):
    """The operation is not possible in the current state (e.g. a job touched inside ``batch()``)."""


class UncompletedJobError(JobsubError, RuntimeError):
    """The job finished without producing a result."""


class FailedJobError(UncompletedJobError):
    """The submitted function raised an exception.

    The message holds the remote exception type, message and traceback.
    ``__cause__`` is the original exception object (when it could be
    unpickled) whose own ``__cause__`` carries the remote traceback text.
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


class PreemptedError(JobError):
    """The job was preempted and not requeued."""


class NodeFailureError(JobError):
    """The node running the job failed."""


class QuotaError(JobError):
    """The job was refused or killed because of a quota or account limit."""


class JobLostError(JobError):
    """The backend no longer knows the job and it left no result."""
