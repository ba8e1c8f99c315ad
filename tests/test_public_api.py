"""The public names are pinned: removing or adding one is a visible decision."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import jobsub


def test_all_is_pinned() -> None:
    assert jobsub.__all__ == sorted(jobsub.__all__, key=str)
    assert set(jobsub.__all__) == {
        "AutoExecutor", "BackendError", "CodePackageTooLargeError", "CorruptResultError", "DebugExecutor",
        "DebugJob", "DelayedSubmission", "DependencyError", "Executor", "FailedJobError", "FailedSubmissionError",
        "ImageBuildError", "InvalidParameterError",
        "InvalidStateError", "Job", "JobCancelledError", "JobEnvironment", "JobError",
        "JobLostError", "JobState", "JobTimeoutError", "JobsubError", "LocalExecutor",
        "LocalJob", "NodeFailureError", "OutOfMemoryError", "PicklingError", "PreemptedError",
        "QuotaError", "SlurmExecutor", "SlurmJob", "SubmissionError", "UncompletedJobError", "UnreadableResultError",
        "__version__", "cached", "graph", "helpers", "results", "summary", "wait",
    }
    for name in jobsub.__all__:
        assert hasattr(jobsub, name), name


def _imported_by(module: str, candidates: tuple[str, ...], *, bare: bool = False) -> list[str]:
    """Which of ``candidates`` (or their submodules) a fresh interpreter has loaded after importing ``module``.

    ``bare``: as in a task container, jobsub on PYTHONPATH and no site-packages (an editable
    install's import hook would load pathlib itself).
    """
    code = (
        f"import sys, {module}; print(sorted(m for m in sys.modules if m in {candidates!r} "
        f"or m.split('.')[0] in {candidates!r}))"
    )
    command = [sys.executable, *(["-S"] if bare else []), "-c", code]
    env = {**os.environ, "PYTHONPATH": str(Path(jobsub.__file__).resolve().parent.parent)} if bare else None
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    found: list[str] = ast.literal_eval(out.stdout)
    return found


def test_import_is_cheap() -> None:
    """`import jobsub` must not import any backend SDK."""
    assert _imported_by("jobsub", ("docker", "boto3", "botocore", "google", "kubernetes")) == []


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


def test_worker_start_is_lean() -> None:
    """Every task pays the worker's imports: what only some tasks need stays out of it."""
    heavy = ("cloudpickle", "dataclasses", "asyncio", "inspect", "logging", "typing", "pathlib", "jobsub.job")
    assert _imported_by("jobsub.worker", heavy, bare=True) == []


def test_result_pickling_without_cloudpickle_loaded() -> None:
    """A worker that never loaded cloudpickle still sends back what only cloudpickle can pickle."""
    code = (
        "import sys, operator; from jobsub.calls import Outcome\n"
        "plain = Outcome(ok=True, value=operator.add).dumps()\n"
        "assert 'cloudpickle' not in sys.modules\n"
        "by_value = Outcome(ok=True, value=[1, lambda x: x + 1]).dumps()\n"
        "assert 'cloudpickle' in sys.modules\n"
        "sys.stdout.write(plain.hex() + ' ' + by_value.hex())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    plain, by_value = (bytes.fromhex(part) for part in out.stdout.split())
    import operator

    from jobsub.calls import Outcome

    assert Outcome.loads(plain).value is operator.add
    value = Outcome.loads(by_value).value
    assert value[0] == 1 and value[1](2) == 3
