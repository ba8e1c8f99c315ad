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
import sys

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
    **dict.fromkeys(_ALIASES, "_submitit.aliases"),
    "AutoExecutor": "executor",
    "Executor": "executor",
    "cached": "executor",
    "graph": "graph",
    "results": "progress",
    "summary": "timeline",
    "wait": "progress",
    "Job": "job",
    "JobState": "states",
    "JobEnvironment": "environment",
    "DelayedSubmission": "calls",
    "__version__": "_version",
}


_WIRED = {"Job": "hold"}
"""Modules loaded with a name: ``jobsub.Job`` comes with the layer that releases held jobs
(``jobsub.hold`` registers itself as their driver: the ``Job`` future never imports it)."""


class _SubmititPaths:
    """``jobsub.core.utils``, ``jobsub.slurm.slurm``...: submitit's module paths, served by the modules of
    ``jobsub/_submitit/`` (one object under both names), so the package's top level holds only
    jobsub's own layers.  First on ``sys.meta_path``, it answers nothing but those names."""

    _MIRRORED = ("core", "auto", "local", "slurm", "aliases", "watcher", "submitit_alias")

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> Any:
        if not name.startswith(__name__ + ".") or name.split(".")[1] not in cls._MIRRORED:
            return None
        from importlib.machinery import ModuleSpec

        real = importlib.import_module(f"{__name__}._submitit.{name.partition('.')[2]}")
        # a loader by its two methods: importlib.abc.Loader would cost every `import jobsub`
        return ModuleSpec(name, cls, is_package=hasattr(real, "__path__"))  # type: ignore[arg-type]

    @staticmethod
    def create_module(spec: Any) -> Any:
        module = sys.modules[f"{__name__}._submitit.{spec.name.partition('.')[2]}"]
        spec.submodule_search_locations = getattr(module, "__path__", None)
        spec.loader_state = module.__spec__  # the import system sets the alias's spec on the module
        return module

    @staticmethod
    def exec_module(module: Any) -> None:
        """Run already, under its own name (whose spec it keeps)."""
        module.__spec__ = module.__spec__.loader_state


if not any(finder is _SubmititPaths for finder in sys.meta_path):
    sys.meta_path.insert(0, _SubmititPaths)


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
    from . import helpers as helpers
    from ._submitit import auto as auto
    from ._submitit import core as core
    from ._submitit import local as local
    from ._submitit import slurm as slurm
    from ._submitit.aliases import (
        DebugExecutor,
        DebugJob,
        LocalExecutor,
        LocalJob,
        SlurmExecutor,
        SlurmJob,
    )
    from ._version import __version__
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
    from .progress import results, wait
    from .states import JobState
    from .timeline import summary

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
    "results",
    "summary",
    "wait",
]
