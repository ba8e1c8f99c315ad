"""``submitit.core.job_environment`` names."""

from ..environment import JobEnvironment

__all__ = ["JobEnvironment"]
