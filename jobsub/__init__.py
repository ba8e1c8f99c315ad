"""jobsub: send Python callables to wherever compute lives and get futures back.

::

    import jobsub

    ex = jobsub.AutoExecutor(folder="runs")
    ex.update_parameters(timeout_min=30, cpus_per_task=4, slurm_partition="gpu")
    job = ex.submit(sum, [1, 2, 3])
    print(job.result())
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: every task imports this package
if TYPE_CHECKING:
    from typing import Any

# Public names are imported on first use (PEP 562): ``python -m jobsub.worker`` imports this
# package for every task and must not pay for the executor, asyncio or the backends.
_ERRORS = (
    "BackendError", "CodePackageTooLargeError", "CorruptResultError", "DependencyError", "FailedJobError",
    "FailedSubmissionError", "ImageBuildError", "InvalidParameterError", "InvalidStateError",
    "JobCancelledError", "JobError", "JobLostError", "JobsubError", "JobTimeoutError",
    "NodeFailureError", "OutOfMemoryError", "PicklingError", "PreemptedError", "QuotaError",
    "SubmissionError", "UncompletedJobError", "UnreadableResultError",
)
_ALIASES = ("DebugExecutor", "DebugJob", "LocalExecutor", "LocalJob", "SlurmExecutor", "SlurmJob")
_SUBMODULES = ("auto", "core", "helpers", "local", "slurm")
"""Submodules that submitit code reaches as attributes (``submitit.helpers.as_completed``)."""
_WHERE = {
    **dict.fromkeys(_ERRORS, "errors"),
    **dict.fromkeys(_ALIASES, "aliases"),
    "AutoExecutor": "executor",
    "Executor": "executor",
    "cached": "executor",
    "graph": "graph",
    "Job": "job",
    "JobState": "states",
    "JobEnvironment": "environment",
    "DelayedSubmission": "calls",
    "__version__": "_version",
}


_WIRED = {"Job": "hold"}
"""Modules loaded with a name: ``jobsub.Job`` comes with the layer that releases held jobs
(``jobsub.hold`` registers itself as their driver: the ``Job`` future never imports it)."""


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'jobsub' has no attribute {name!r}") from None
    if name in _WIRED:
        importlib.import_module(f"{__name__}.{_WIRED[name]}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from . import auto as auto
    from . import core as core
    from . import helpers
    from . import local as local
    from . import slurm as slurm
    from ._version import __version__
    from .aliases import DebugExecutor, DebugJob, LocalExecutor, LocalJob, SlurmExecutor, SlurmJob
    from .calls import DelayedSubmission
    from .environment import JobEnvironment
    from .errors import (
        BackendError,
        CodePackageTooLargeError,
        CorruptResultError,
        DependencyError,
        FailedJobError,
        FailedSubmissionError,
        ImageBuildError,
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
        UnreadableResultError,
    )
    from .executor import AutoExecutor, Executor, cached
    from .graph import graph
    from .job import Job
    from .states import JobState

__all__ = [
    "AutoExecutor",
    "BackendError",
    "CodePackageTooLargeError",
    "CorruptResultError",
    "DebugExecutor",
    "DebugJob",
    "DelayedSubmission",
    "DependencyError",
    "Executor",
    "FailedJobError",
    "FailedSubmissionError",
    "ImageBuildError",
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
    "UnreadableResultError",
    "__version__",
    "cached",
    "graph",
    "helpers",
]
