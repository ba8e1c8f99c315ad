"""``submitit.auto.auto`` names: jobsub's own ``AutoExecutor`` under submitit's module path."""

from ...executor import AutoExecutor

__all__ = ["AutoExecutor"]
