"""``submitit.core.core`` names."""

from ..executor import Executor
from ..job import AsyncJobProxy, Job
from ..watcher import Watcher as InfoWatcher

__all__ = ["AsyncJobProxy", "Executor", "InfoWatcher", "Job"]
