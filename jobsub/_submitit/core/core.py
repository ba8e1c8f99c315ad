"""``submitit.core.core`` names."""

from ...executor import Executor
from ...job import AsyncJobProxy, Job, R
from ..watcher import Watcher as InfoWatcher

__all__ = ["AsyncJobProxy", "Executor", "InfoWatcher", "Job", "R"]
