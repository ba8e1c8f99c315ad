"""``submitit.core.job_environment`` names."""

from ...calls import DelayedSubmission
from ...environment import JobEnvironment
from ...folder import JobPaths

__all__ = ["DelayedSubmission", "JobEnvironment", "JobPaths"]
