"""``submitit.local.debug`` names: jobsub's debug backend under submitit's module path."""

from ..aliases import DebugExecutor, DebugJob
from ..environment import JobEnvironment as DebugJobEnvironment

__all__ = ["DebugExecutor", "DebugJob", "DebugJobEnvironment"]
