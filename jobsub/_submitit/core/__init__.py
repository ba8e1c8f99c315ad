"""submitit's ``submitit.core`` module paths, for code that imports from them."""

from . import core, job_environment, submission, utils

__all__ = ["core", "job_environment", "submission", "utils"]
