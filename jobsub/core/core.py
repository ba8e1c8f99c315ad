"""``submitit.core.core`` names."""

from ..executor import Executor
from ..job import AsyncJobProxy, Job

__all__ = ["AsyncJobProxy", "Executor", "Job"]
