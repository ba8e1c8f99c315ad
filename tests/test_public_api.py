"""The public names are pinned: removing or adding one is a visible decision."""

import subprocess
import sys

import jobsub


def test_all_is_pinned() -> None:
    assert jobsub.__all__ == sorted(jobsub.__all__, key=str)
    assert set(jobsub.__all__) == {
        "AutoExecutor", "BackendError", "DebugExecutor", "DebugJob", "DelayedSubmission",
        "Executor", "FailedJobError", "FailedSubmissionError", "InvalidParameterError",
        "InvalidStateError", "Job", "JobCancelledError", "JobEnvironment", "JobError",
        "JobLostError", "JobState", "JobTimeoutError", "JobsubError", "LocalExecutor",
        "LocalJob", "NodeFailureError", "OutOfMemoryError", "PicklingError", "PreemptedError",
        "QuotaError", "SlurmExecutor", "SlurmJob", "SubmissionError", "UncompletedJobError",
        "__version__", "helpers",
    }
    for name in jobsub.__all__:
        assert hasattr(jobsub, name), name


def test_import_is_cheap() -> None:
    """`import jobsub` must not import any backend SDK."""
    code = (
        "import sys, jobsub; heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('docker', 'boto3', 'botocore', 'google', 'kubernetes')]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_submitit_module_paths() -> None:
    from jobsub.core import utils
    from jobsub.core.core import Job
    from jobsub.core.job_environment import JobEnvironment

    assert utils.FailedJobError is jobsub.FailedJobError
    assert utils.UncompletedJobError is jobsub.UncompletedJobError
    assert issubclass(utils.FailedJobError, utils.UncompletedJobError)
    assert issubclass(jobsub.UncompletedJobError, RuntimeError)
    assert Job is jobsub.Job and JobEnvironment is jobsub.JobEnvironment
    assert jobsub.helpers.DelayedSubmission is jobsub.DelayedSubmission
