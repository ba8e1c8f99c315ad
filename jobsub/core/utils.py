"""``submitit.core.utils`` names, for ``except submitit.core.utils.FailedJobError`` code."""

from ..calls import DelayedSubmission
from ..errors import FailedJobError, FailedSubmissionError, UncompletedJobError
from ..folder import JobPaths
from ..helpers import CommandFunction, environment_variables

__all__ = [
    "CommandFunction",
    "DelayedSubmission",
    "FailedJobError",
    "FailedSubmissionError",
    "JobPaths",
    "UncompletedJobError",
    "environment_variables",
]
