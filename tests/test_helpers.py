"""submitit's helpers: CommandFunction, FunctionSequence, as_completed, clean_env."""

from __future__ import annotations

import os
import sys

import pytest

import jobsub
from jobsub import helpers
from tests import tasks


def test_command_function_returns_stdout() -> None:
    fn = helpers.CommandFunction([sys.executable, "-c", "import sys; print(sys.argv[1:])"], verbose=False)
    assert fn("a", flag=2) == "['a', '--flag=2']"


def test_command_function_failure_carries_stderr() -> None:
    fn = helpers.CommandFunction([sys.executable, "-c", "import sys; sys.exit('broken here')"], verbose=False)
    with pytest.raises(jobsub.FailedJobError, match="broken here"):
        fn()
    with pytest.raises(TypeError):
        helpers.CommandFunction("ls -l")  # type: ignore[arg-type]


def test_command_function_in_a_job(local_executor: jobsub.AutoExecutor) -> None:
    job = local_executor.submit(helpers.CommandFunction(["echo", "from a job"], verbose=False))
    assert job.result(timeout=30) == "from a job"


def test_function_sequence_runs_each_once() -> None:
    seq = helpers.FunctionSequence()
    seq.add(tasks.add, 1, 2)
    seq.add(tasks.add, a=3, b=4)
    assert len(seq) == 2 and seq() == [3, 7]
    assert all(d.done() for d in seq)


def test_checkpointable_needs_call() -> None:
    class NotCallable(helpers.Checkpointable):
        pass

    with pytest.raises(TypeError, match="no __call__"):
        NotCallable()


def test_as_completed(local_executor: jobsub.AutoExecutor) -> None:
    jobs = [local_executor.submit(tasks.sleep_then, s, s) for s in (0.6, 0.0)]
    order = [j.result() for j in helpers.as_completed(jobs, timeout=30, poll_frequency=0.05)]
    assert order == [0.0, 0.6]
    slow = local_executor.submit(tasks.sleep_then, 5)
    with pytest.raises(TimeoutError):
        list(helpers.as_completed([slow], timeout=0.2, poll_frequency=0.05))
    slow.cancel()


def test_clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    monkeypatch.setenv("RANK", "3")
    with helpers.clean_env():
        assert "SLURM_JOB_ID" not in os.environ and "RANK" not in os.environ
    assert os.environ["SLURM_JOB_ID"] == "12"


def test_job_environment_outside_a_job() -> None:
    with pytest.raises(RuntimeError, match="only available inside a job"):
        jobsub.JobEnvironment()


def test_torch_distributed_environment(local_executor: jobsub.AutoExecutor) -> None:
    local_executor.update_parameters(tasks_per_node=2)
    envs = local_executor.submit(tasks.torch_env).results(timeout=30)
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert len({e["MASTER_PORT"] for e in envs}) == 1
