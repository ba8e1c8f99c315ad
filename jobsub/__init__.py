"""jobsub: send Python callables to wherever compute lives and get futures back.

::

    import jobsub

    ex = jobsub.AutoExecutor(folder="runs")
    ex.update_parameters(timeout_min=30, cpus_per_task=4, slurm_partition="gpu")
    job = ex.submit(sum, [1, 2, 3])
    print(job.result())
"""

from . import (
    core,  # noqa: F401 - ``submitit.core.utils.FailedJobError`` paths, spelled jobsub.core...
    helpers,
)
from ._version import __version__
from .aliases import DebugExecutor, DebugJob, LocalExecutor, LocalJob, SlurmExecutor, SlurmJob
from .calls import DelayedSubmission
from .environment import JobEnvironment
from .errors import (
    BackendError,
    FailedJobError,
    FailedSubmissionError,
    InvalidParameterError,
    InvalidStateError,
    JobCancelledError,
    JobError,
    JobLostError,
    JobsubError,
    JobTimeoutError,
    NodeFailureError,
    OutOfMemoryError,
    PicklingError,
    PreemptedError,
    QuotaError,
    SubmissionError,
    UncompletedJobError,
)
from .executor import AutoExecutor, Executor
from .job import Job
from .states import JobState

__all__ = [
    "AutoExecutor",
    "BackendError",
    "DebugExecutor",
    "DebugJob",
    "DelayedSubmission",
    "Executor",
    "FailedJobError",
    "FailedSubmissionError",
    "InvalidParameterError",
    "InvalidStateError",
    "Job",
    "JobCancelledError",
    "JobEnvironment",
    "JobError",
    "JobLostError",
    "JobState",
    "JobTimeoutError",
    "JobsubError",
    "LocalExecutor",
    "LocalJob",
    "NodeFailureError",
    "OutOfMemoryError",
    "PicklingError",
    "PreemptedError",
    "QuotaError",
    "SlurmExecutor",
    "SlurmJob",
    "SubmissionError",
    "UncompletedJobError",
    "__version__",
    "helpers",
]
