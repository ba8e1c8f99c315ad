"""submitit's per-backend class names, as thin spellings of ``Executor(folder, backend)``.

``jobsub.SlurmExecutor(folder, max_num_timeout=3)`` takes the backend's own
key names (``partition``, ``time``, ``mem``...), as submitit's did.
"""

from __future__ import annotations

import os
from typing import Any

from .executor import Executor
from .job import Job

__all__ = ["DebugExecutor", "DebugJob", "LocalExecutor", "LocalJob", "SlurmExecutor", "SlurmJob"]


class LocalExecutor(Executor):
    def __init__(self, folder: str | os.PathLike[str], **parameters: Any) -> None:
        super().__init__(folder, "local", **parameters)


class DebugExecutor(Executor):
    def __init__(self, folder: str | os.PathLike[str], **parameters: Any) -> None:
        super().__init__(folder, "debug", **parameters)


class SlurmExecutor(Executor):
    def __init__(self, folder: str | os.PathLike[str], **parameters: Any) -> None:
        super().__init__(folder, "slurm", **parameters)


# submitit had one Job class per backend; here one class serves all of them
LocalJob = DebugJob = SlurmJob = Job
