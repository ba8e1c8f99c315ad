"""``submitit.local.debug`` names: jobsub's debug backend under submitit's module path."""

from ...environment import JobEnvironment as DebugJobEnvironment
from ..aliases import DebugExecutor, DebugJob

__all__ = ["DebugExecutor", "DebugJob", "DebugJobEnvironment"]
